"""A worker process: claim a batch, read the current rows, send records, acknowledge, through the public
API's services (`DatabaseService`, `AlgoliaService`): a loop of one's own and a worker are the same code.

One loop on the main thread does the database work; sender threads do the HTTP, so up to REQUESTS_IN_FLIGHT
batches are on the wire while the next one is claimed and built: against an Algolia tens of milliseconds away,
one request at a time would cap a worker at BATCH_SIZE / round-trip time. Every database call is a short
autocommit statement; no transaction is ever open while an Algolia request is in flight. The worker owns its
pool, its LISTEN connection and its Algolia transport, all created after fork.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait

import psycopg
from psycopg_pool import ConnectionPool

from workerpool.api.algolia import AlgoliaService
from workerpool.api.database import DatabaseService
from workerpool.api.results import BatchResult
from workerpool.config import Settings
from workerpool.db.connection import DatabaseUnavailable, connect, make_pool, one_row
from workerpool.db.queries import Q
from workerpool.exit_codes import WORKER_EXIT_BOOT_ERROR, WORKER_EXIT_CRASH, WORKER_EXIT_OK
from workerpool.logs import host_name, one_line
from workerpool.observability import metrics
from workerpool.process import liveness
from workerpool.process.housekeeping import Housekeeping
from workerpool.process.pending import PendingAcks
from workerpool.process.wakeup import Listener
from workerpool.process.watchdog import start_watchdog
from workerpool.runtime.model import LABELS, Batch

log = logging.getLogger(__name__)

SPILL_EVERY_S = 0.1  # while busy and the inbox looked empty: how often to look again
BOOT_RETRY_S = 5.0
# --drain, nothing claimable: another worker still holds the last rows. How soon to look again, so
# that the command exits right after they are acknowledged (the NOTIFY only announces new work).
DRAIN_RECHECK_S = 0.05
# Container objects allocated (net) before the cyclic collector's youngest generation runs. A claim
# keeps several per row alive until it is acknowledged (the row's tuple, its SyncItem, the record dict,
# the Item, the values' lists and dicts), so the default 700 ran a collection several times per batch,
# each one walking the batch's objects: ~1 us of the worker's CPU per record at BATCH_SIZE 1000
# (benchmarks/phases.py). At this threshold one runs about once per batch; none of those objects is
# in a reference cycle, so their memory never waited for the collector anyway.
COLLECT_AFTER = 10_000


def collect_less() -> None:
    """Set up the cyclic garbage collector for the claim loop, once the process has booted: what exists
    by then (modules, the pool, the transport) lives as long as the process and is frozen out of every
    later collection, and collections run per COLLECT_AFTER objects instead of per 700."""
    gc.freeze()
    gc.set_threshold(COLLECT_AFTER, *gc.get_threshold()[1:])


class Worker:
    """The claim loop of one worker process."""

    def __init__(self, settings: Settings, number: int = 1, parent_pid: int | None = None, drain: bool = False) -> None:
        self.settings = settings
        self.number = number
        self.parent_pid = parent_pid
        self.drain = drain
        self.worker_id = f"{host_name()}:{os.getpid()}:{number}"
        self.stopping = False
        self.stop_requested_at = 0.0
        self.batches = 0
        self.records = 0
        self._pool: ConnectionPool | None = None
        self._db: DatabaseService | None = None
        self._algolia: AlgoliaService | None = None
        self._listener = Listener(settings, number)
        self._next_spill = 0.0
        self._pending_acks = PendingAcks(self._database_trouble)
        self._in_flight: deque[tuple[BatchResult, float, Future[BatchResult]]] = deque()
        self._sender_thread = ThreadPoolExecutor(max_workers=settings.requests_in_flight, thread_name_prefix="sender")
        self._db_failures = 0
        self._housekeeping = Housekeeping(settings, number, self.worker_id)
        self._reading: Batch | None = None  # the claim whose records the main thread is building

    # ---- lifecycle -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """First SIGTERM: stop claiming and finish. Second: exit now.

        SIGINT is ignored: a worker only gets it from a terminal's Ctrl-C, sent to the whole process
        group, and the supervisor relays that as SIGTERM; counting both would turn one Ctrl-C into a
        "second signal" and kill in-flight work. A second Ctrl-C reaches the workers as SIGKILL.
        """
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        if self.stopping:
            os._exit(WORKER_EXIT_CRASH)
        self.stopping = True
        self.stop_requested_at = time.monotonic()

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        try:
            self._boot()
        except DatabaseUnavailable as exc:
            log.error(str(exc), extra={"action": "worker_boot_failed", "worker": self.number})
            return WORKER_EXIT_BOOT_ERROR
        log.info(
            "worker started",
            extra={
                "action": "worker_started",
                "worker": self.number,
                "worker_id": self.worker_id,
                "batch_size": self.settings.batch_size,
                "pool_size": self.settings.pool_size,
            },
        )
        try:
            while not self.stopping:
                liveness.beat()
                if self._parent_gone():
                    log.warning("supervisor is gone; exiting", extra={"action": "parent_gone", "worker": self.number})
                    break
                if not self._step():
                    if self.drain and self._queue_empty():
                        break
                    self._wait_for_work()
            self._finish_in_flight()
            self._pending_acks.flush(self._db)
        finally:
            self._shutdown()
        log.info(
            "worker stopped",
            extra={"action": "worker_stopped", "worker": self.number, "batches": self.batches, "records": self.records},
        )
        return WORKER_EXIT_OK

    def _boot(self) -> None:
        # Ride out a short outage (a Postgres restart), then fail with the reserved code so that
        # the supervisor can tell "cannot start" from "crashed".
        deadline = time.monotonic() + BOOT_RETRY_S
        while True:
            try:
                with connect(self.settings.database_url, purpose="boot", timeout=5) as conn:
                    exists = one_row(conn.execute(Q.schema_installed))[0]
                break
            except DatabaseUnavailable:
                if time.monotonic() >= deadline or self.stopping or self._parent_gone():
                    raise
                time.sleep(0.5)
        if not exists:
            raise DatabaseUnavailable(
                "the workerpool schema is missing in DATABASE_URL; run `workerpool migrate` first"
            )
        self._pool = make_pool(self.settings.database_url, self.settings.pool_size, f"worker-{self.number}")
        self._db = DatabaseService(self._pool, self.settings, worker_name=self.worker_id)
        self._algolia = AlgoliaService(
            self._db, self.settings, wait=self._sleep, out_of_time=self._shutdown_budget_spent, worker=self.number
        )
        collect_less()
        if self.settings.transform_timeout:
            start_watchdog(self.settings, self.number, self.pool, lambda: (self.algolia.building, self._reading))

    def _shutdown(self) -> None:
        self._sender_thread.shutdown(wait=True)
        try:
            if self._pool is not None:
                with self._pool.connection(timeout=2) as conn:
                    self._housekeeping.forget(conn)
        except Exception:
            pass
        self._listener.close()
        if self._algolia is not None:
            self._algolia.close()  # before the pool: its task tracker records what it saw published
        if self._pool is not None:
            self._pool.close(timeout=2)

    @property
    def pool(self) -> ConnectionPool:
        """The worker's connection pool, which `_boot` makes (after fork, so no connection crosses it)."""
        if self._pool is None:
            raise RuntimeError("the worker's pool was used before boot")
        return self._pool

    @property
    def db(self) -> DatabaseService:
        """The queue's operations, over the worker's pool (made by `_boot`, after fork)."""
        if self._db is None:
            raise RuntimeError("the worker's database service was used before boot")
        return self._db

    @property
    def algolia(self) -> AlgoliaService:
        """Reading, building and sending a claim (made by `_boot`)."""
        if self._algolia is None:
            raise RuntimeError("the worker's Algolia service was used before boot")
        return self._algolia

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    # ---- the loop --------------------------------------------------------------------------

    def _step(self) -> bool:
        """One iteration: housekeeping, claim and prepare a batch, then hand it to a sender thread.

        Up to REQUESTS_IN_FLIGHT earlier batches are on the wire meanwhile, each under its own claim
        (so no key is in two of them); their outcomes are written as they return. With as many in
        flight as allowed, the oldest is waited for first. False when nothing was due (every batch in
        flight has then been settled).
        """
        batch = None
        try:
            self._pending_acks.flush(self._db)
            if self._pending_acks:
                return True  # never claim more while an outcome is still unwritten
            self._settle_returned()
            if len(self._in_flight) >= self.settings.requests_in_flight:
                self._settle_oldest()
                if self._pending_acks:
                    return True
            now = time.monotonic()
            if self._housekeeping.due(now, self.stopping):
                with self.pool.connection() as conn:
                    self._housekeeping.run(conn, now, self.batches, self.records, self.stopping)
            if not self.stopping:
                batch = self._claim(now)
            self._db_failures = 0
        except psycopg.Error as exc:
            self._finish_in_flight()
            self._database_trouble(exc)
            return True
        if not batch:
            self._finish_in_flight()
            return False
        started = time.monotonic()
        self._reading = batch  # for the watchdog (process/watchdog.py)
        result = self.algolia.read(batch)  # on the main thread: transforms run under TRANSFORM_TIMEOUT
        self._reading = None
        if result.database_error is not None:  # reading the rows failed: every row retries, nothing to send
            self._database_trouble(result.database_error)
            self._finish(result, started)
        else:
            self._in_flight.append((result, started, self._sender_thread.submit(self.algolia.send, result)))
        return True

    def _claim(self, now: float) -> Batch:
        """Move inbox keys into the queue when they may be waiting, then claim a batch.

        The inbox is looked at before every claim while it yields keys, after a wake-up or a short
        claim, and otherwise every SPILL_EVERY_S: a worker draining a long queue does not pay a round
        trip per batch to find the inbox empty.
        """
        # The claim size (its owner is the service's `ClaimSize`): from BATCH_SIZE up to BATCH_SIZE_MAX
        # under a deep backlog, halved after each 429.
        claim_size, look = self.algolia.batch_limit, now >= self._next_spill
        batch = self.db.claim(claim_size, spill=look, recover=False)  # the housekeeping recovers expired claims
        if look:
            self._spilled(batch.spilled, now)
        elif not batch:  # about to idle: nothing may wait in the inbox
            batch = self.db.claim(claim_size, spill=True, recover=False)
            self._spilled(batch.spilled, now)
        if self.algolia.claimed(len(batch), claim_size):  # short: look at the inbox
            self._next_spill = 0.0
        return batch

    def _spilled(self, moved: int | None, now: float) -> None:
        self._next_spill = 0.0 if moved else now + SPILL_EVERY_S

    def _finish_in_flight(self) -> None:
        """Wait for every batch on the wire, oldest first, and write their outcomes."""
        while self._in_flight:
            self._settle_oldest()

    def _settle_returned(self) -> None:
        """Write the outcomes of the batches that have come back, without waiting for the others."""
        for entry in [e for e in self._in_flight if e[2].done()]:
            self._in_flight.remove(entry)
            self._settle(*entry)

    def _settle_oldest(self) -> None:
        self._settle(*self._in_flight.popleft())

    def _settle(self, result: BatchResult, started: float, future: Future[BatchResult]) -> None:
        """Wait for one batch's HTTP part, then write its outcome."""
        while not future.done():  # each request is bounded (ALGOLIA_REQUEST_DEADLINE): the loop beats meanwhile
            liveness.beat()
            wait([future], timeout=1.0)
        try:
            future.result()
        except psycopg.Error as exc:  # extending the lease failed: the rows come back by lease expiry
            self._database_trouble(exc)
            return
        if result.lost:
            log.warning(
                "lease lost",
                extra={
                    "action": "lease_lost",
                    "worker": self.number,
                    "token": str(result.batch.token),
                    "batch": len(result.batch),
                },
            )
            return
        self._finish(result, started)

    def _finish(self, result: BatchResult, started: float) -> None:
        outcome, index_of = result.outcome, self.algolia.index_of
        counts = outcome.counts()
        metrics.record_batch(
            synced=((i.index, LABELS[i.action], i.row.created_at) for i in outcome.done),
            failed=(index_of(r.table_name) for r, _ in outcome.failed),
            retried=(index_of(r.table_name) for r in outcome.retried_rows()),
            duration_s=time.monotonic() - started,
            claim_size=self.algolia.batch_limit,
        )
        self._pending_acks.add(result)
        self._pending_acks.flush(self._db)
        liveness.mark_in_service()
        self.batches += 1
        self.records += counts["upserts"] + counts["deletes"] + counts["skipped"]
        log.info(
            "batch synced",
            extra={
                "action": "batch_synced",
                "worker": self.number,
                "batch": len(result.batch),
                **counts,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "batch_limit": self.algolia.batch_limit,
            },
        )

    # ---- the Algolia service's callbacks ----------------------------------------------------

    def _shutdown_budget_spent(self) -> bool:
        return self.stopping and time.monotonic() - self.stop_requested_at > self.settings.shutdown_timeout / 2000.0

    # ---- database trouble ----------------------------------------------------------------------

    def _queue_empty(self) -> bool:
        try:
            return self.db.idle()
        except psycopg.Error as exc:
            self._database_trouble(exc)
            return False

    def _database_trouble(self, exc: BaseException) -> None:
        self._db_failures += 1
        if self._pool is not None:
            self._pool.check()  # drop every broken idle connection now, not one failed call at a time
        delay = min(5.0, 0.1 * 2 ** min(self._db_failures, 6))
        log.warning(
            "database error",
            extra={
                "action": "database_error",
                "worker": self.number,
                "error": one_line(exc),
                "retry_in_s": round(delay, 2),
            },
        )
        self._sleep(delay)

    # ---- waiting ---------------------------------------------------------------------------

    def _wait_for_work(self) -> None:
        """Until a NOTIFY arrives, POLLING_INTERVAL passes, or a stop is asked for."""
        wait_s = self.settings.polling_interval / 1000.0
        if self._listener.wait(
            min(wait_s, DRAIN_RECHECK_S) if self.drain else wait_s,
            interrupted=lambda: self.stopping or self._parent_gone(),
            sleep=self._sleep,
        ):
            self._next_spill = 0.0  # the change that woke us is in the inbox

    def _sleep(self, seconds: float) -> None:
        """A sleep that a stop request cuts short; on the main thread, the loop's heartbeat goes on."""
        main, end = threading.current_thread() is threading.main_thread(), time.monotonic() + seconds
        while not self.stopping and not self._parent_gone():
            if main:
                liveness.beat()
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))
