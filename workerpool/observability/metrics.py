"""Prometheus metrics, aggregated across the supervisor's forked worker processes.

How the numbers get from the workers to `/metrics`: prometheus-client's multiprocess mode. When
`HEALTH_PORT` is set, the supervisor creates a private temporary directory, points
`PROMETHEUS_MULTIPROC_DIR` at it and switches the client to its file-backed value class *before* it
forks any worker (`setup`). Every process then writes its counters, histograms and gauges to its own
small mmap file there (`counter_<pid>.db`, …); a scrape merges all the files (`MultiProcessCollector`),
so a counter of a worker that died is still counted, and `mark_process_dead` drops the per-process
("live") gauges of a dead worker. Queue depth and the oldest pending age are not recorded by anyone:
they are read from the database at scrape time (see `workerpool.health`).

When `HEALTH_PORT` is off nothing is set up and every `record_*` function returns at once, so the
worker pays nothing for metrics it does not serve.

The time of the last acknowledged batch is a gauge in `max` mode (`workerpool_last_ack_timestamp_seconds`),
so the supervisor's health check reads the newest acknowledgement of any of its workers, past or present,
from the same files (`last_ack_time`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_dir: str | None = None  # set by the supervisor before fork; inherited by the workers
_owner_pid: int | None = None
_m: _Metrics | None = None
_creating = threading.Lock()  # one set of metric objects per process (see `_metrics`)

BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class _Metrics:
    """The metric objects; created lazily, once multiprocess mode is on."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.synced = Counter(
            "workerpool_records_synced",
            "Records acknowledged: upsert, delete, or unchanged (same content as last sent: not sent)",
            ["index", "action"],
            registry=None,
        )
        self.failed = Counter(
            "workerpool_records_failed", "Records that failed for good (status failed)", ["index"], registry=None
        )
        self.retried = Counter(
            "workerpool_records_retried", "Records given back to the queue for a retry", ["index"], registry=None
        )
        self.batches = Counter("workerpool_batches", "Batches processed", registry=None)
        self.batch_duration = Histogram(
            "workerpool_batch_duration_seconds",
            "Claim-to-acknowledgement time of one batch",
            buckets=BATCH_BUCKETS,
            registry=None,
        )
        self.lag = Histogram(
            "workerpool_change_to_ack_lag_seconds",
            "Time from a change being queued to its record being acknowledged",
            buckets=LAG_BUCKETS,
            registry=None,
        )
        self.searchable = Histogram(
            "workerpool_time_to_searchable_seconds",
            "Time from a change's capture to Algolia publishing it (searchable), for the records of the "
            "tasks a worker follows (a sample); at most the last poll interval late",
            buckets=LAG_BUCKETS,
            registry=None,
        )
        self.pending_tasks = Gauge(
            "workerpool_algolia_pending_tasks",
            "Algolia tasks a live worker is following that are not published yet",
            multiprocess_mode="livesum",
            registry=None,
        )
        self.tasks_untracked = Counter(
            "workerpool_algolia_tasks_untracked",
            "Accepted tasks not followed to publication: sampled (one request's tasks are followed per half "
            "second), full (TASK_TRACKING tasks followed already) or timeout (not published after 10 minutes)",
            ["reason"],
            registry=None,
        )
        self.requests = Counter(
            "workerpool_algolia_requests",
            "Batch requests sent to Algolia, by answer: accepted, throttled (429) or failed; "
            "records synced over accepted requests is the records per request",
            ["outcome"],
            registry=None,
        )
        self.throttled = Counter(
            "workerpool_algolia_throttled", "Algolia 429 answers (the worker slowed down)", registry=None
        )
        self.auth_errors = Counter(
            "workerpool_algolia_auth_errors",
            "Algolia 401/403 answers (wrong or revoked credentials, missing ACL)",
            registry=None,
        )
        self.restarts = Counter(
            "workerpool_worker_restarts", "Worker processes restarted by the supervisor", registry=None
        )
        self.worker_timeouts = Counter(
            "workerpool_worker_timeouts",
            "Workers the supervisor killed because their claim loop stopped turning for WORKER_TIMEOUT",
            registry=None,
        )
        self.auth_failed_at = Gauge(
            "workerpool_algolia_auth_failed_timestamp_seconds",
            "Unix time Algolia last refused the credentials (401/403)",
            multiprocess_mode="max",
            registry=None,
        )
        self.accepted_at = Gauge(
            "workerpool_algolia_accepted_timestamp_seconds",
            "Unix time Algolia last accepted a request",
            multiprocess_mode="max",
            registry=None,
        )
        self.unreachable_since = Gauge(
            "workerpool_algolia_unreachable_since_timestamp_seconds",
            "Unix time Algolia last became unreachable for a worker (5xx, network errors, timeouts or answers "
            "that are not Algolia's); an outage is going on while it is newer than the last accepted request",
            multiprocess_mode="max",
            registry=None,
        )
        self.failed_rows = Counter(
            "workerpool_rows_failed",
            "Queue rows that went to failed for good, by reason: rejected (Algolia refused the record), "
            "attempts (out of MAX_RETRIES), error (a record workerpool could not read or build)",
            ["reason"],
            registry=None,
        )
        self.last_ack = Gauge(
            "workerpool_last_ack_timestamp_seconds",
            "Unix time of the last batch that settled rows (done or failed)",
            multiprocess_mode="max",
            registry=None,
        )
        self.polling_only = Gauge(
            "workerpool_worker_polling_only",
            "1 for a live worker whose wake-ups are polling only (POLLING_INTERVAL): notifications cannot reach "
            "it, as under transaction pooling without LISTEN_DATABASE_URL, or its LISTEN connection is down",
            multiprocess_mode="liveall",
            registry=None,
        )
        self.claim_size = Gauge(
            "workerpool_worker_batch_limit",
            "Current adaptive claim size of each live worker (grown under a deep backlog, halved on 429)",
            multiprocess_mode="liveall",
            registry=None,
        )


def setup(directory: str | None = None) -> str:
    """Turn on multiprocess metrics for this process and the workers it will fork; returns the directory.

    Must run before the first fork. The client picks its value class when it is first imported,
    which may already have happened, so the class is switched here explicitly as well.
    """
    global _dir, _owner_pid, _m
    _dir = directory or tempfile.mkdtemp(prefix="workerpool-metrics-")
    _owner_pid = os.getpid()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _dir
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    _m = None
    return _dir


def teardown() -> None:
    """Forget the directory and delete it (the supervisor, once every worker is reaped)."""
    global _dir, _owner_pid, _m
    directory, owner = _dir, _owner_pid
    _dir, _owner_pid, _m = None, None, None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == directory:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    if directory and owner == os.getpid():
        shutil.rmtree(directory, ignore_errors=True)


def _metrics() -> _Metrics | None:
    """This process's metric objects, created by the first call; None when metrics are off.

    A worker's first calls come from several threads at once (the main thread and the sender threads),
    so the objects are created under a lock, once. The client's file-backed value keeps its number in
    the object and writes `number + amount` to the file on each `inc`: a second set of objects for the
    same keys would write over the increments of the first for good (a worker's first 403 counted by one
    set and its next by the other leaves the counter at 1, and `increase()` never sees it move).
    The supervisor creates its objects on its main thread, the one that forks, so no other thread holds
    the lock at a fork.
    """
    global _m
    if _dir is None:
        return None
    m = _m
    if m is None:
        with _creating:
            if _m is None:
                _m = _Metrics()
            m = _m
    return m


objects = _metrics  # for the metric modules beside this one (freshness.py)


# ---- recording (called from the workers and the supervisor) ------------------------------------


def record_batch(
    *,
    synced: Iterable[tuple[str, str, datetime | None]],
    failed: Iterable[str],
    retried: Iterable[str],
    duration_s: float,
    claim_size: int,
) -> None:
    """Once a batch's outcome is known: `synced` is (index, action label, change time) per record
    acknowledged, `failed` and `retried` the index of each row that failed for good or retries. The
    iterables are only consumed when metrics are on."""
    m = _metrics()
    if m is None:
        return
    try:
        now_wall = time.time()
        settled = False
        for index, label, created in synced:
            settled = True
            m.synced.labels(index, label).inc()
            if created is not None:
                m.lag.observe(max(0.0, now_wall - created.timestamp()))
        for index in failed:
            settled = True
            m.failed.labels(index).inc()
        for index in retried:
            m.retried.labels(index).inc()
        m.batches.inc()
        m.batch_duration.observe(max(0.0, duration_s))
        if settled:
            m.last_ack.set(now_wall)
        m.claim_size.set(claim_size)
    except Exception:  # metrics must never break the worker
        pass


def record_throttle(claim_size: int | None = None) -> None:
    """Algolia answered 429."""
    m = _metrics()
    if m is None:
        return
    m.throttled.inc()
    if claim_size is not None:
        m.claim_size.set(claim_size)


def record_request(outcome: str) -> None:
    """A batch request went to Algolia and came back `accepted`, `throttled` (429) or `failed` (any other
    error, network errors included). Each one is an indexing task on Algolia's side when accepted."""
    m = _metrics()
    if m is not None:
        m.requests.labels(outcome).inc()


def record_auth(accepted: bool) -> None:
    """Algolia accepted a request (True) or refused the credentials (False)."""
    m = _metrics()
    if m is None:
        return
    if accepted:
        m.accepted_at.set(time.time())
    else:
        m.auth_failed_at.set(time.time())


def auth_failing() -> bool:
    """Whether Algolia's last word to this supervisor's workers was a refusal of the credentials."""
    refused = _newest("workerpool_algolia_auth_failed_timestamp_seconds")
    return refused is not None and refused > (_newest("workerpool_algolia_accepted_timestamp_seconds") or 0.0)


def record_unreachable() -> None:
    """Algolia became unreachable for this worker (the first failure of an outage)."""
    m = _metrics()
    if m is not None:
        m.unreachable_since.set(time.time())


def record_polling_only(polling: bool) -> None:
    """Whether this worker's wake-ups are polling only (no notification can reach it)."""
    m = _metrics()
    if m is not None:
        m.polling_only.set(1 if polling else 0)


def algolia_unreachable_for() -> float | None:
    """Seconds this supervisor's workers have found Algolia unreachable, with no request accepted
    since; None when Algolia's last word was an acceptance (or there was none)."""
    since = _newest("workerpool_algolia_unreachable_since_timestamp_seconds")
    if since is None or since <= (_newest("workerpool_algolia_accepted_timestamp_seconds") or 0.0):
        return None
    return max(0.0, time.time() - since)


def record_rows_failed(reason: str, n: int) -> None:
    """`n` queue rows went to failed for good (reason: rejected, attempts or error)."""
    m = _metrics()
    if m is not None and n:
        m.failed_rows.labels(reason).inc(n)


def record_auth_error() -> None:
    """Algolia answered 401 or 403: the credentials are wrong, revoked or lack an ACL."""
    m = _metrics()
    if m is not None:
        m.auth_errors.inc()


def record_worker_timeout() -> None:
    """The supervisor killed a worker whose loop stopped (WORKER_TIMEOUT)."""
    m = _metrics()
    if m is not None:
        m.worker_timeouts.inc()


def record_restart() -> None:
    """The supervisor scheduled a worker restart."""
    m = _metrics()
    if m is not None:
        m.restarts.inc()


def process_dead(pid: int) -> None:
    """A worker exited: drop its live gauges (its counters stay in the totals)."""
    if _dir is None:
        return
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, _dir)
    except OSError:
        pass


# ---- reading (the supervisor's HTTP thread) --------------------------------------------------


def registry() -> CollectorRegistry:
    """A fresh registry merging every process's files (one per scrape, as the client recommends)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    reg = CollectorRegistry()
    if _dir is not None:
        MultiProcessCollector(reg, path=_dir)
    return reg


def last_ack_time() -> float | None:
    """Unix time of the newest acknowledgement by any worker of this supervisor, or None."""
    return _newest("workerpool_last_ack_timestamp_seconds")


def _newest(name: str) -> float | None:
    """The largest value of a max-mode gauge across this supervisor's worker files, or None."""
    if _dir is None:
        return None
    import glob

    from prometheus_client.multiprocess import MultiProcessCollector

    files = glob.glob(os.path.join(_dir, "gauge_max_*.db"))
    newest = None
    for metric in MultiProcessCollector.merge(files, accumulate=False):
        if metric.name == name:
            for sample in metric.samples:
                if sample.value and (newest is None or sample.value > newest):
                    newest = sample.value
    return newest
