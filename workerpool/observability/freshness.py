"""Time to searchable, as metrics (`metrics._Metrics` holds them): what `runtime/searchable.py`
measures (see there for how)."""

from __future__ import annotations

from collections.abc import Iterable

from workerpool.observability import metrics


def record_searchable(seconds: Iterable[float]) -> None:
    """Sampled records of a task Algolia has published: capture to publication, each."""
    m = metrics.objects()
    if m is not None:
        for s in seconds:
            m.searchable.observe(s)


def record_pending_tasks(n: int) -> None:
    m = metrics.objects()
    if m is not None:
        m.pending_tasks.set(n)


def record_task_untracked(reason: str, n: int) -> None:
    m = metrics.objects()
    if m is not None and n:
        m.tasks_untracked.labels(reason).inc(n)
