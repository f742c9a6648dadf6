"""The seam between the two public services: what `AlgoliaService` needs of `DatabaseService`.

An `AlgoliaService` reads the rows of a claim, follows the claim's lease while it sends, and finds
the claims that hold the rows `sync_batch` was given; the `DatabaseService` it was made with does
all three, through these methods and no private state. A `BatchResult` carries the rest from one
service to the other (`built`, `unwritten`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import psycopg

from workerpool.runtime.model import Batch, SyncItem


class ClaimStore(Protocol):
    """The claims and connections `AlgoliaService` uses (`DatabaseService` is one)."""

    def reading(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """A connection that reads rows as the workers do (pinned settings, value loaders)."""
        ...

    def claims_of(self, rows: Sequence[SyncItem]) -> list[tuple[Batch, list[SyncItem]]]:
        """`rows` grouped by the claim holding them."""
        ...

    def extend(self, batch: Batch) -> bool:
        """Push a claim's lease forward; False when it was already lost."""
        ...
