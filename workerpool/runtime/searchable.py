"""Time to searchable: from a change's capture to the moment Algolia has published it.

Algolia acknowledges a write with a `taskID` per index and applies it asynchronously; the task's
status becomes `published` when the change is searchable. A worker's sender threads hand the tasks
of the batches Algolia accepted to its `TaskTracker` (`accepted`: a dict update, no I/O), which
polls `GET /1/indexes/{index}/task/{taskID}` from a thread of its own, with backoff, until each is
published: no claim, lease or connection is held meanwhile, and the send path never waits for it.

Sampled, with bounded memory and request rate whatever the backlog: a worker starts following at
most one request's tasks per FOLLOW_EVERY_S, and at most TASK_TRACKING tasks at once (0 turns
tracking off); a task is polled at most every MAX_POLL_S and the worker's polls are never more than
POLLS_PER_S in all; a task that stays unpublished for GIVE_UP_S is dropped. Tasks not followed are
counted in `workerpool_algolia_tasks_untracked_total{reason}` (sampled, full, timeout). Each followed
task keeps up to SAMPLE_RECORDS capture times of its records (the oldest among them).

The figures: `workerpool_time_to_searchable_seconds` (per sampled record: capture to the poll that
saw `published`, so at most the last backoff step late), `workerpool_algolia_pending_tasks`, and
`published_at` on the claim's `algolia_sync_log_batches` rows, which `stats` and the dashboard read.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg

from workerpool.db.queries import Q
from workerpool.logs import one_line
from workerpool.observability import freshness

log = logging.getLogger(__name__)

SAMPLE_RECORDS = 8
FOLLOW_EVERY_S = 0.5  # at most one newly accepted task followed per this long, per worker
FIRST_POLL_S = 0.02
MAX_POLL_S = 1.0
POLLS_PER_S = 10.0
GIVE_UP_S = 600.0
FLUSH_S = 1.0
UNRECORDED_KEEP_S = 60.0  # a published claim whose log row is not written yet is retried this long


@dataclass(order=True)
class _Task:
    due: float
    index: str = field(compare=False)
    task_id: int = field(compare=False)
    token: uuid.UUID | None = field(compare=False)
    changed_at: list[float] = field(compare=False)  # wall-clock capture times of sampled records
    accepted: float = field(compare=False)  # time.monotonic() of the acceptance
    step: float = field(compare=False, default=FIRST_POLL_S)


class TaskTracker:
    """One worker's follower of Algolia tasks (see the module docstring). `get_task(index, task_id)`
    returns the task's status text; `connection()` lends a connection to record publication times on
    the log (None: not recorded)."""

    def __init__(
        self,
        limit: int,
        get_task: Callable[[str, int], str],
        connection: Callable[[], AbstractContextManager[psycopg.Connection[Any]]] | None = None,
        worker: int = 0,
    ) -> None:
        self.limit = limit
        self._get_task = get_task
        self._connection = connection
        self.worker = worker
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[_Task] = []
        self._published: dict[uuid.UUID, tuple[float, float]] = {}  # claim token -> (published wall, first seen)
        self._stop = False
        self._thread: threading.Thread | None = None
        self._next_follow = 0.0

    @property
    def pending(self) -> int:
        return len(self._heap)

    def wants(self, tasks: dict[str, int]) -> bool:
        """Whether `accepted` should follow these tasks: the tracker has room, and FOLLOW_EVERY_S has
        passed since it last took some (a clock read and a length check otherwise)."""
        if not self.limit:
            return False
        now = time.monotonic()
        if now < self._next_follow:
            freshness.record_task_untracked("sampled", len(tasks))
            return False
        if len(self._heap) >= self.limit:
            freshness.record_task_untracked("full", len(tasks))
            return False
        self._next_follow = now + FOLLOW_EVERY_S
        return True

    def accepted(self, tasks: dict[str, int], changed_at: Sequence[datetime], token: uuid.UUID | None) -> None:
        """Algolia accepted a request: its task per index, and the capture times of its records."""
        sample = _sample(changed_at)
        now = time.monotonic()
        with self._lock:
            for index, task_id in tasks.items():
                if len(self._heap) >= self.limit:
                    freshness.record_task_untracked("full", 1)
                    break
                heapq.heappush(self._heap, _Task(now + FIRST_POLL_S, index, task_id, token, sample, now))
            freshness.record_pending_tasks(len(self._heap))
            self._wake.notify()

    def start(self) -> None:
        if self.limit and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="task-tracker", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._flush()

    def _run(self) -> None:
        next_flush = time.monotonic() + FLUSH_S
        while True:
            with self._lock:
                while not self._stop and (not self._heap or self._heap[0].due > time.monotonic()):
                    wait = (self._heap[0].due - time.monotonic()) if self._heap else FLUSH_S
                    self._wake.wait(max(0.0, min(wait, FLUSH_S)))
                    if time.monotonic() >= next_flush:
                        break
                if self._stop:
                    return
                task = heapq.heappop(self._heap) if self._heap and self._heap[0].due <= time.monotonic() else None
            if task is not None:
                self._poll(task)
                time.sleep(1.0 / POLLS_PER_S)
            if time.monotonic() >= next_flush:
                self._flush()
                next_flush = time.monotonic() + FLUSH_S

    def _poll(self, task: _Task) -> None:
        try:
            status = self._get_task(task.index, task.task_id)
        except Exception as exc:  # an outage: the task is polled again later, like any unpublished one
            status = ""
            log.debug("task poll failed", extra={"action": "task_poll_failed", "error": one_line(exc)})
        now_wall, now = time.time(), time.monotonic()
        if status == "published":
            freshness.record_searchable([max(0.0, now_wall - t) for t in task.changed_at])
            if task.token is not None:
                with self._lock:
                    self._published[task.token] = (now_wall, now)
        elif now - task.accepted > GIVE_UP_S:
            freshness.record_task_untracked("timeout", 1)
        else:
            task.step = min(task.step * 1.5, MAX_POLL_S)
            task.due = now + task.step
            with self._lock:
                heapq.heappush(self._heap, task)
        with self._lock:
            freshness.record_pending_tasks(len(self._heap))

    def _flush(self) -> None:
        """Publication times onto the claims' log rows; a row the ack has not written yet is tried again."""
        with self._lock:
            waiting, self._published = self._published, {}
        if not waiting or self._connection is None:
            return
        tokens = list(waiting)
        try:
            with self._connection() as conn:
                done = {
                    r[0]
                    for r in conn.execute(
                        Q.record_published,
                        (tokens, [datetime.fromtimestamp(waiting[t][0], UTC) for t in tokens]),
                    )
                }
        except Exception as exc:  # the database away: tried again at the next flush
            done = set()
            log.debug("published times not recorded", extra={"action": "published_unrecorded", "error": one_line(exc)})
        now = time.monotonic()
        with self._lock:
            for token in tokens:
                if token not in done and now - waiting[token][1] < UNRECORDED_KEEP_S:
                    self._published.setdefault(token, waiting[token])


def _sample(changed_at: Sequence[datetime]) -> list[float]:
    """Up to SAMPLE_RECORDS capture times: the request's oldest, and others evenly spread over it."""
    if not changed_at:
        return []
    step = max(1, len(changed_at) // SAMPLE_RECORDS)
    picked = [min(changed_at), *changed_at[step::step][: SAMPLE_RECORDS - 1]]
    return [c.timestamp() for c in picked]


def task_status_getter(settings: Any) -> Callable[[str, int], str]:
    """`get_task` for a worker: a Sender of its own (its own HTTP session, made on first use, after
    fork), so that polls never share a connection or a host's state with the batches."""
    sender: Any = None

    def get(index: str, task_id: int) -> str:
        nonlocal sender
        if sender is None:
            from workerpool.runtime.algolia import Sender

            sender = Sender(settings)
        return str(sender.task_status(index, task_id))

    return get
