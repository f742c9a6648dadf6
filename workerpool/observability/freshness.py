"""Time to searchable, as metrics: what `runtime/searchable.py` measures (see there for how)."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from workerpool.observability import metrics

SEARCHABLE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class FreshnessMetrics:
    """The metric objects, made once per set of `metrics` objects (multiprocess mode on)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.searchable = Histogram(
            "workerpool_time_to_searchable_seconds",
            "Time from a change's capture to Algolia publishing it (searchable), for the records of the "
            "tasks a worker follows (a sample); at most the last poll interval late",
            buckets=SEARCHABLE_BUCKETS,
            registry=None,
        )
        self.pending = Gauge(
            "workerpool_algolia_pending_tasks",
            "Algolia tasks a live worker is following that are not published yet",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.untracked = Counter(
            "workerpool_algolia_tasks_untracked",
            "Accepted tasks not followed to publication: sampled (one request's tasks are followed per half "
            "second), full (TASK_TRACKING tasks followed already) or timeout (not published after 10 minutes)",
            ["reason"],
            registry=None,
        )


_made: tuple[object, FreshnessMetrics] | None = None
_making = threading.Lock()


def _objects() -> FreshnessMetrics | None:
    """These metrics for the current `metrics` objects, or None when metrics are off (see
    `metrics._metrics` for why they are made once, under a lock)."""
    global _made
    base = metrics.objects()
    if base is None:
        return None
    made = _made
    if made is None or made[0] is not base:
        with _making:
            if _made is None or _made[0] is not base:
                _made = (base, FreshnessMetrics())
            made = _made
    return made[1]


def record_searchable(seconds: Iterable[float]) -> None:
    """Sampled records of a task Algolia has published: capture to publication, each."""
    m = _objects()
    if m is not None:
        for s in seconds:
            m.searchable.observe(s)


def record_pending_tasks(n: int) -> None:
    m = _objects()
    if m is not None:
        m.pending.set(n)


def record_task_untracked(reason: str, n: int) -> None:
    m = _objects()
    if m is not None and n:
        m.untracked.labels(reason).inc(n)
