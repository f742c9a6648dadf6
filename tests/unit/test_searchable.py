"""`runtime/searchable.py`'s TaskTracker with a fake getTask and a fake connection: what it follows,
when it gives up following, what it records, and the records it samples."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from testing import wait_until
from workerpool.runtime import searchable
from workerpool.runtime.searchable import SAMPLE_RECORDS, TaskTracker, _sample


class FakeAlgolia:
    """getTask: each task is notPublished for its first `polls` polls."""

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.asked: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def get_task(self, index: str, task_id: int) -> str:
        with self.lock:
            n = self.asked[(index, task_id)] = self.asked.get((index, task_id), 0) + 1
        return "published" if n > self.polls else "notPublished"


class FakeConnection:
    """Records the (tokens, times) of each UPDATE, and marks them all."""

    def __init__(self) -> None:
        self.updates: list[tuple[list[uuid.UUID], list[datetime]]] = []

    def execute(self, query: str, params: tuple[Any, ...]) -> list[tuple[uuid.UUID]]:
        tokens, times = params
        self.updates.append((tokens, times))
        return [(t,) for t in tokens]


def _tracker(limit: int, algolia: FakeAlgolia, conn: FakeConnection | None = None) -> TaskTracker:
    @contextmanager
    def lend() -> Any:
        yield conn

    return TaskTracker(limit, algolia.get_task, lend if conn is not None else None)


def test_a_task_is_followed_until_published_and_recorded_on_its_claim(monkeypatch):
    monkeypatch.setattr(searchable, "FLUSH_S", 0.05)
    algolia, conn = FakeAlgolia(polls=3), FakeConnection()
    tracker = _tracker(4, algolia, conn)
    tracker.start()
    token = uuid.uuid4()
    changed = [datetime.now(UTC) - timedelta(seconds=1)]
    try:
        assert tracker.wants({"products": 7})
        tracker.accepted({"products": 7, "brands": 9}, changed, token)
        wait_until(lambda: tracker.pending == 0 and conn.updates, timeout=10)
    finally:
        tracker.stop()
    assert algolia.asked == {("products", 7): 4, ("brands", 9): 4}  # three notPublished, then published
    assert conn.updates[0][0] == [token]


def test_a_full_tracker_follows_nothing_more():
    algolia = FakeAlgolia(polls=10**6)
    tracker = _tracker(2, algolia)  # not started: nothing is polled, nothing leaves
    tracker.accepted({"a": 1}, [datetime.now(UTC)], None)
    tracker.accepted({"a": 2}, [datetime.now(UTC)], None)
    assert tracker.pending == 2 and not tracker.wants({"a": 3})
    assert not _tracker(0, algolia).wants({"a": 1})  # TASK_TRACKING=0: off


def test_a_task_never_published_is_dropped_after_the_give_up_time(monkeypatch):
    monkeypatch.setattr(searchable, "GIVE_UP_S", 0.3)
    monkeypatch.setattr(searchable, "MAX_POLL_S", 0.05)
    tracker = _tracker(4, FakeAlgolia(polls=10**6))
    tracker.start()
    try:
        tracker.accepted({"a": 1}, [datetime.now(UTC)], None)
        time.sleep(0.05)
        assert tracker.pending == 1
        wait_until(lambda: tracker.pending == 0, timeout=5)
    finally:
        tracker.stop()


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=3000))
def test_the_sample_keeps_the_oldest_change_and_at_most_a_few(offsets):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    changed = [base + timedelta(milliseconds=o) for o in offsets]
    picked = _sample(changed)
    assert 1 <= len(picked) <= SAMPLE_RECORDS
    assert min(picked) == min(changed).timestamp()
    assert set(picked) <= {c.timestamp() for c in changed}


def test_one_request_is_followed_per_sampling_interval(monkeypatch):
    monkeypatch.setattr(searchable, "FOLLOW_EVERY_S", 0.2)
    tracker = _tracker(100, FakeAlgolia(polls=0))
    assert tracker.wants({"a": 1})
    assert not tracker.wants({"a": 2})  # within the interval: sampled out
    time.sleep(0.25)
    assert tracker.wants({"a": 3})
