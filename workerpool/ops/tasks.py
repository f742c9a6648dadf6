"""Waiting for an Algolia task (a copy, a move, a settings change) to be published.

A plain polling loop instead of the client's `wait_for_task`: that helper recurses once per poll and
gives up after 100 polls (about seven minutes), shorter than a large index's move can take.
"""

from __future__ import annotations

import time

from algoliasearch.search.client import SearchClientSync

TASK_WAIT_S = 3600.0  # how long a command waits for one task before it gives up, saying so
POLL_MAX_S = 2.0


class TaskNotPublished(Exception):
    """Algolia has not published a task within the wait; it may still complete."""


def wait_published(client: SearchClientSync, index: str, task_id: int, timeout_s: float = TASK_WAIT_S) -> None:
    """Return once `task_id` on `index` is published; TaskNotPublished after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while client.get_task(index, task_id).status != "published":
        left = deadline - time.monotonic()
        if left <= 0:
            raise TaskNotPublished(
                f"Algolia has not published task {task_id} on {index} after {timeout_s:.0f}s (it may still complete)"
            )
        time.sleep(min(delay, left))
        delay = min(delay * 1.5, POLL_MAX_S)
