"""Read-your-writes for operators: wait until Algolia has published every write an index accepted.

Algolia applies an index's tasks in order, so a fence (`Admin.fence`, a write that changes nothing)
published means every earlier write to that index is searchable. `verify` waits so before it reads
the index (drift is never reported for a write Algolia accepted and has not applied yet), and
`run --drain --wait-published` before it exits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from workerpool.config import Settings
from workerpool.ops.admin import Admin

log = logging.getLogger(__name__)

PUBLISH_WAIT_S = 300.0  # how long a command waits for an index's fence before it says so


def wait_indices_published(settings: Settings, indices: Iterable[str], timeout_s: float = PUBLISH_WAIT_S) -> None:
    """Return once each index has published every write it accepted before this call; raises
    runtime.algolia.TaskNotPublished (one line) after `timeout_s` for one index, AlgoliaError when
    Algolia cannot be asked."""
    admin = Admin(settings)
    try:
        for index in indices:
            admin.wait_published(index, admin.fence(index), timeout_s)
    finally:
        admin.close()
