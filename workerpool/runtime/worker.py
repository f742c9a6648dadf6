"""A worker process: claim a batch, read the current rows, send records, acknowledge.

One loop on the main thread does the database work; sender threads do the HTTP, so up to
REQUESTS_IN_FLIGHT batches are on the wire while the next one is claimed and built: against an Algolia
tens of milliseconds away, one request at a time would cap a worker at BATCH_SIZE / round-trip time. Every database call is a short
autocommit statement; no transaction is ever open while an Algolia request is in flight. The worker
owns its pool, its LISTEN connection and its Algolia transport, all created after fork.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import psycopg
from psycopg import sql

from workerpool.capture.model import Watched, load_watched
from workerpool.config import Settings
from workerpool.db.connection import (
    DatabaseUnavailable,
    connect,
    describe_error,
    make_pool,
    tcp_liveness,
)
from workerpool.db.queries import NOTIFY_CHANNEL, Q
from workerpool.logs import host_name, one_line
from workerpool.observability import metrics
from workerpool.runtime import liveness, queue, records
from workerpool.runtime.algolia import AlgoliaError, Sender
from workerpool.runtime.queue import Claim, QueueRow
from workerpool.runtime.retention import Retention
from workerpool.runtime.shaping import Current, Item, Outcome, Shaper

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BOOT_ERROR = 3  # reserved: the worker cannot start (bad DSN, schema missing); do not respawn blindly

HEARTBEAT_EVERY_S = 5.0
CONFIG_REFRESH_S = 10.0
SPILL_EVERY_S = 0.1  # while busy and the inbox looked empty: how often to look again
BOOT_RETRY_S = 5.0
AUTH_RETRY_MAX_S = 30.0  # while Algolia refuses the key: the longest wait before trying it again
# --drain, nothing claimable: another worker still holds the last rows. How soon to look again, so
# that the command exits right after they are acknowledged (the NOTIFY only announces new work).
DRAIN_RECHECK_S = 0.05


# SQLSTATE classes that speak of the relation, not of a row: 42 (undefined table or column,
# insufficient privilege, syntax) and 0A (feature not supported). Their rows retry with backoff.
_TABLE_ERROR_CLASSES = ("42", "0A")
# Classes that speak of the server or the moment (a deadlock, a cancelled statement, no memory, a
# shutdown): nobody's data is at fault, so the whole claim is given back as on a lost connection.
_TRANSIENT_ERROR_CLASSES = ("08", "40", "53", "57", "58")


class LeaseLost(Exception):
    """This worker's claim token no longer holds its rows: stop touching them."""


class AuthRejected(Exception):
    """Algolia answered 401/403: the credentials are wrong or revoked, not the records."""

    def __init__(self, error: AlgoliaError) -> None:
        super().__init__(error.message)
        self.error = error


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"throttled for {retry_after}s")
        self.retry_after = retry_after


def compute_backoff(attempt: int, base_ms: int, cap_ms: int) -> int:
    """Capped exponential backoff with full jitter in [50%, 100%] (dramatiq's shape), in ms."""
    ceiling = min(cap_ms, base_ms * 2 ** max(0, attempt - 1))
    return int(ceiling * random.uniform(0.5, 1.0))


@dataclass
class Prepared:
    """A claimed batch whose records are built, on its way through the sender thread."""

    claim: Claim
    outcome: Outcome
    started: float
    items: list[Item] | None = None


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
        self.batch_limit = settings.batch_size
        self.batches = 0
        self.records = 0
        self._pool = None
        self._listener: psycopg.Connection | None = None
        self._listener_retry_at = 0.0
        self._sender: Sender | None = None
        self._watched: dict[str, Watched] = {}
        self._shaper = Shaper(settings)
        self._watched_at = 0.0
        self._next_heartbeat = 0.0
        self._next_recovery = 0.0
        self._next_spill = 0.0
        self._pending_acks: list[tuple[Claim, Outcome]] = []
        self._in_flight: deque[tuple[Prepared, Future]] = deque()
        self._sender_thread = ThreadPoolExecutor(max_workers=settings.requests_in_flight, thread_name_prefix="sender")
        self._db_failures = 0
        self._auth_failures = 0
        self._retention = Retention(settings.log_retention_days)

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
            os._exit(EXIT_CRASH)
        self.stopping = True
        self.stop_requested_at = time.monotonic()

    def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        try:
            self._boot()
        except DatabaseUnavailable as exc:
            log.error(str(exc), extra={"action": "worker_boot_failed", "worker": self.number})
            return EXIT_BOOT_ERROR
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
                if self._parent_gone():
                    log.warning("supervisor is gone; exiting", extra={"action": "parent_gone", "worker": self.number})
                    break
                if not self._step():
                    if self.drain and self._queue_empty():
                        break
                    self._wait_for_work()
            self._finish_in_flight()
            self._flush_pending_ack()
        finally:
            self._shutdown()
        log.info(
            "worker stopped",
            extra={"action": "worker_stopped", "worker": self.number, "batches": self.batches, "records": self.records},
        )
        return EXIT_OK

    def _boot(self) -> None:
        # Ride out a short outage (a Postgres restart), then fail with the reserved code so that
        # the supervisor can tell "cannot start" from "crashed".
        deadline = time.monotonic() + BOOT_RETRY_S
        while True:
            try:
                with connect(self.settings.database_url, purpose="boot", timeout=5) as conn:
                    exists = conn.execute(Q.schema_installed).fetchone()[0]
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
        self._sender = Sender(self.settings)

    def _shutdown(self) -> None:
        self._sender_thread.shutdown(wait=True)
        try:
            if self._pool is not None:
                with self._pool.connection(timeout=2) as conn:
                    queue.forget_worker(conn, self.worker_id)
        except Exception:
            pass
        if self._listener is not None:
            self._listener.close()
        if self._pool is not None:
            self._pool.close(timeout=2)
        if self._sender is not None:
            self._sender.close()

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
        claim = None
        try:
            self._flush_pending_ack()
            if self._pending_acks:
                return True  # never claim more while an outcome is still unwritten
            self._settle_returned()
            if len(self._in_flight) >= self.settings.requests_in_flight:
                self._settle_oldest()
                if self._pending_acks:
                    return True
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self._heartbeat(now)
            if now >= self._next_recovery:
                self._recover(now)
            if self._retention.due(now) and not self.stopping:
                with self._pool.connection() as conn:
                    self._retention.step(conn, now)
            if not self.stopping:
                with self._pool.connection() as conn:
                    claim = self._claim(conn, now)
            self._db_failures = 0
        except psycopg.Error as exc:
            self._finish_in_flight()
            self._database_trouble(exc)
            return True
        if claim is None:
            self._finish_in_flight()
            return False
        prepared = self._prepare_claim(claim)
        if prepared.items is None:  # reading the rows failed: nothing to send
            self._finish(prepared)
        else:
            self._in_flight.append((prepared, self._sender_thread.submit(self._send_prepared, prepared)))
        return True

    def _claim(self, conn: psycopg.Connection, now: float) -> Claim | None:
        """Move inbox keys into the queue when they may be waiting, then claim a batch.

        The inbox is looked at before every claim while it yields keys, after a wake-up or a short
        claim, and otherwise every SPILL_EVERY_S: a worker draining a long queue does not pay a round
        trip per batch to find the inbox empty.
        """
        spilled = None
        if now >= self._next_spill:
            spilled = self._spill(conn, now)
        claim = queue.claim_batch(conn, self.batch_limit, self.settings.lease_timeout, self.worker_id, now)
        if claim is None and spilled is None and self._spill(conn, now):  # about to idle: nothing may wait
            claim = queue.claim_batch(conn, self.batch_limit, self.settings.lease_timeout, self.worker_id, now)
        if claim is None or len(claim.rows) < self.batch_limit:
            self._next_spill = 0.0
        return claim

    def _spill(self, conn: psycopg.Connection, now: float) -> int:
        moved = queue.spill(conn, self.batch_limit)
        if moved is None:  # another transaction holds a pending row of one of those keys: try again soon
            log.debug(
                "inbox spill gave way to a lock; retrying", extra={"action": "spill_lock_wait", "worker": self.number}
            )
            moved = 0
        self._next_spill = 0.0 if moved else now + SPILL_EVERY_S
        return moved

    def _prepare_claim(self, claim: Claim) -> Prepared:
        prepared = Prepared(claim, Outcome(), time.monotonic())
        try:
            prepared.items = self._prepare(claim, prepared.outcome)
        except psycopg.Error as exc:
            # Reading the rows failed; give the whole claim back (attempt counted) and carry on.
            self._database_trouble(exc)
            prepared.outcome = Outcome(retry=[(r, f"database error: {one_line(exc)}") for r in claim.rows])
        except Exception as exc:  # a defect, not the data's fault: the rows retry, the worker lives
            log.exception("preparing a batch failed", extra={"action": "prepare_failed", "worker": self.number})
            prepared.outcome = Outcome(
                retry=[(r, f"internal error: {type(exc).__name__}: {one_line(exc)}") for r in claim.rows]
            )
        return prepared

    def _send_prepared(self, prepared: Prepared) -> None:
        """Runs on the sender thread: the HTTP part of a batch."""
        self._send(prepared.claim, prepared.items, prepared.outcome)

    def _finish_in_flight(self) -> None:
        """Wait for every batch on the wire, oldest first, and write their outcomes."""
        while self._in_flight:
            self._settle_oldest()

    def _settle_returned(self) -> None:
        """Write the outcomes of the batches that have come back, without waiting for the others."""
        for entry in [e for e in self._in_flight if e[1].done()]:
            self._in_flight.remove(entry)
            self._settle(*entry)

    def _settle_oldest(self) -> None:
        self._settle(*self._in_flight.popleft())

    def _settle(self, prepared: Prepared, future: Future) -> None:
        """Wait for one batch's HTTP part, then write its outcome."""
        try:
            future.result()
        except LeaseLost:
            log.warning(
                "lease lost",
                extra={
                    "action": "lease_lost",
                    "worker": self.number,
                    "token": str(prepared.claim.token),
                    "batch": len(prepared.claim.rows),
                },
            )
            return
        except psycopg.Error as exc:  # extending the lease failed: the rows come back by lease expiry
            self._database_trouble(exc)
            return
        except Exception as exc:  # a defect in sending: what was not sent retries
            log.exception("sending a batch failed", extra={"action": "send_failed", "worker": self.number})
            prepared.outcome.retry.extend(
                (r, f"internal error: {type(exc).__name__}: {one_line(exc)}") for r in _unsettled_rows(prepared)
            )
        self._finish(prepared)

    def _finish(self, prepared: Prepared) -> None:
        claim, outcome, started = prepared.claim, prepared.outcome, prepared.started
        counts = {
            "upserts": sum(1 for i in outcome.done if i.action in ("updateObject", "partialUpdateObject")),
            "deletes": sum(1 for i in outcome.done if i.action == "deleteObject"),
            "skipped": sum(1 for i in outcome.done if i.action == "skip"),
            "failed": len(outcome.failed),
            "retried": len(outcome.retry),
            "released": len(outcome.unsent),
        }
        metrics.record_batch(self, claim, outcome, started)  # before the flush, which empties the outcome's lists
        self._pending_acks.append((claim, outcome))
        self._flush_pending_ack()
        liveness.mark_in_service()
        self.batches += 1
        self.records += counts["upserts"] + counts["deletes"] + counts["skipped"]
        log.info(
            "batch synced",
            extra={
                "action": "batch_synced",
                "worker": self.number,
                "batch": len(claim.rows),
                **counts,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "batch_limit": self.batch_limit,
            },
        )

    # ---- read and transform ----------------------------------------------------------------

    def _config_for(self, conn: psycopg.Connection, table: str) -> Watched | None:
        now = time.monotonic()
        if table not in self._watched or now - self._watched_at > CONFIG_REFRESH_S:
            self._watched = load_watched(conn)
            self._watched_at = now
        return self._watched.get(table)

    def _prepare(self, claim: Claim, outcome: Outcome) -> list[Item]:
        """Load the current rows for the claim (one query per table) and serialize their actions.

        A table whose rows cannot be read fails (or retries) its own rows only; a connection error
        gives the whole claim back (the caller's `psycopg.Error` handler)."""
        by_table: dict[str, list[QueueRow]] = {}
        for row in claim.rows:
            by_table.setdefault(row.table_name, []).append(row)
        items: list[Item] = []
        prefix = self.settings.algolia_index_prefix
        with self._pool.connection() as conn:
            for table, rows in by_table.items():
                watched = self._config_for(conn, table)
                if watched is None:
                    outcome.failed.extend(
                        (r, f"table {table} is not watched (no enabled row in algolia_index_config)") for r in rows
                    )
                    continue
                index = prefix + watched.index_name
                for current, part in self._read(conn, watched, index, rows, outcome):
                    for row in part:
                        item = self._shaper.item(watched, index, row, current, outcome)
                        if item is not None:
                            items.append(item)
        return items

    def _read(
        self, conn: psycopg.Connection, watched: Watched, index: str, rows: list[QueueRow], outcome: Outcome
    ) -> Iterator[tuple[Current, list[QueueRow]]]:
        """The current rows of `rows`' keys, in one query when it succeeds.

        When it fails for something in the rows (a value that cannot be read, a key that no longer
        casts to the key's type, an error a source view raises for one row), the keys are halved
        until each offending key fails alone, with the error as its last_error; the others are read
        in the same batch. An error about the table itself (dropped, renamed column, permission)
        retries all of its rows with backoff, and touches no other table.
        """
        try:
            yield self._shaper.load_rows(conn, watched, index, [r.record_id for r in rows]), rows
            return
        except (psycopg.OperationalError, psycopg.InterfaceError):
            raise
        except psycopg.Error as exc:
            if exc.sqlstate and exc.sqlstate[:2] in _TRANSIENT_ERROR_CLASSES:
                raise
            if exc.sqlstate and exc.sqlstate[:2] in _TABLE_ERROR_CLASSES:
                reason = f"cannot read {watched.reads_from} for table {watched.table_name}: {one_line(exc)}"
                outcome.retry.extend((r, reason) for r in rows)
                return
            error: BaseException = exc
        except Exception as exc:  # a loader or value error in psycopg: one row's data
            error = exc
        if len(rows) == 1:
            outcome.failed.append(
                (
                    rows[0],
                    f"cannot read row {rows[0].record_id} of {watched.reads_from}: "
                    f"{type(error).__name__}: {one_line(error)}",
                )
            )
            return
        middle = len(rows) // 2
        yield from self._read(conn, watched, index, rows[:middle], outcome)
        yield from self._read(conn, watched, index, rows[middle:], outcome)

    # ---- send ------------------------------------------------------------------------------

    def _send(self, claim: Claim, items: list[Item], outcome: Outcome) -> None:
        outcome.done.extend(i for i in items if i.action == "skip")
        chunks = list(self._chunks([i for i in items if i.action != "skip"]))
        for n, chunk in enumerate(chunks):
            if self.stopping and self._shutdown_budget_spent():
                outcome.unsent.extend(i.row for c in chunks[n:] for i in c)
                return
            try:
                self._send_chunk(claim, chunk, outcome)
            except Throttled as exc:
                outcome.unsent.extend(_unsettled(chunks[n:], outcome))
                self._slow_down(exc.retry_after)
                return
            except AuthRejected as exc:
                outcome.unsent.extend(_unsettled(chunks[n:], outcome))
                self._auth_rejected(exc.error)
                return
            except AlgoliaError as exc:
                error = one_line(exc.message)
                log.warning(
                    "algolia error",
                    extra={"action": "algolia_error", "worker": self.number, "status": exc.status, "error": error},
                )
                outcome.retry.extend((row, error) for row in _unsettled(chunks[n:], outcome))
                return
        if self._auth_failures:
            self._auth_failures = 0
            log.info(
                "algolia accepts the credentials again", extra={"action": "algolia_auth_ok", "worker": self.number}
            )
        if self.batch_limit < self.settings.batch_size:
            self.batch_limit = min(self.settings.batch_size, self.batch_limit + max(1, self.settings.batch_size // 10))

    def _chunks(self, items: list[Item]) -> Iterator[list[Item]]:
        """Split only where the request-size limit forces it."""
        limit = self.settings.max_request_bytes
        chunk: list[Item] = []
        size = 0
        for item in items:
            if chunk and size + len(item.body) + 1 > limit:
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += len(item.body) + 1
        if chunk:
            yield chunk

    def _send_chunk(self, claim: Claim, chunk: list[Item], outcome: Outcome) -> None:
        """Send one request; a permanent 4xx splits it until only the offending records fail."""
        self._ensure_lease(claim)
        try:
            self._sender.send_batch(records.batch_body(i.body for i in chunk))
        except AlgoliaError as exc:
            if exc.throttled:
                raise Throttled(exc.retry_after or 1.0) from None
            if exc.auth:
                raise AuthRejected(exc) from None
            if not exc.permanent:
                raise
            if len(chunk) == 1:
                outcome.failed.append((chunk[0].row, f"algolia {exc.status}: {one_line(exc.message)}"))
                return
            middle = len(chunk) // 2
            self._send_chunk(claim, chunk[:middle], outcome)
            self._send_chunk(claim, chunk[middle:], outcome)
            return
        metrics.record_auth(accepted=True)
        outcome.done.extend(chunk)

    def _ensure_lease(self, claim: Claim) -> None:
        """Before each request: refuse to send under a lease that is gone; extend one that is ageing."""
        now = time.monotonic()
        left = claim.lease_left(now)
        if left < claim.lease_s * 2 / 3:
            with self._pool.connection() as conn:
                if not queue.extend(conn, claim, now):
                    raise LeaseLost()

    def _slow_down(self, retry_after: float) -> None:
        self.batch_limit = max(1, self.batch_limit // 2)
        metrics.record_throttle(self.batch_limit)
        log.warning(
            "algolia throttled",
            extra={
                "action": "throttled",
                "worker": self.number,
                "retry_after_s": retry_after,
                "batch_limit": self.batch_limit,
            },
        )
        self._sleep(retry_after)

    def _auth_rejected(self, error: AlgoliaError) -> None:
        """Algolia refuses the key: give the rows back unspent, say so once, and try again later
        (a rotated key starts working without a restart)."""
        self._auth_failures += 1
        metrics.record_auth(accepted=False)
        wait = min(AUTH_RETRY_MAX_S, 2.0 * 2 ** min(self._auth_failures - 1, 4))
        if self._auth_failures == 1:
            log.error(
                f"algolia refused ALGOLIA_APP_ID/ALGOLIA_ADMIN_KEY ({error.status}: {one_line(error.message)}); "
                "nothing is sent and no row spends an attempt until the key works again",
                extra={"action": "algolia_auth_failed", "worker": self.number, "status": error.status},
            )
        self._sleep(wait)

    def _shutdown_budget_spent(self) -> bool:
        return time.monotonic() - self.stop_requested_at > self.settings.shutdown_timeout / 2000.0

    # ---- acknowledge -----------------------------------------------------------------------

    def _flush_pending_ack(self) -> None:
        """Write the claims' outcomes; kept and retried if the database is away (nothing is lost)."""
        while self._pending_acks:
            if not self._write_outcome(*self._pending_acks[0]):
                return
            self._pending_acks.pop(0)

    def _write_outcome(self, claim: Claim, outcome: Outcome) -> bool:
        """Write one claim's outcome; False when the database is away (it is kept for later).

        Each part is cleared once written, so a retry after a failure halfway never writes twice.
        """
        s = self.settings
        parts = (
            ("done", lambda conn, o: queue.ack(conn, claim.token, o.done)),
            (
                "failed",
                lambda conn, o: queue.release(
                    conn,
                    claim.token,
                    [r.id for r, _ in o.failed],
                    [e for _, e in o.failed],
                    [0] * len(o.failed),
                    [True] * len(o.failed),
                    s.max_retries,
                ),
            ),
            (
                "retry",
                lambda conn, o: queue.release(
                    conn,
                    claim.token,
                    [r.id for r, _ in o.retry],
                    [e for _, e in o.retry],
                    [compute_backoff(r.attempts, s.retry_backoff, s.retry_backoff_max) for r, _ in o.retry],
                    [False] * len(o.retry),
                    s.max_retries,
                ),
            ),
            (
                "unsent",
                lambda conn, o: queue.release(
                    conn,
                    claim.token,
                    [r.id for r in o.unsent],
                    ["released unsent"] * len(o.unsent),
                    [0] * len(o.unsent),
                    [False] * len(o.unsent),
                    s.max_retries,
                    count_attempt=False,
                ),
            ),
        )
        try:
            with self._pool.connection() as conn:
                for name, write in parts:
                    expected = len(getattr(outcome, name))
                    if expected:
                        held = write(conn, outcome)
                        setattr(outcome, name, [])
                        if held < expected:
                            log.warning(
                                "lease lost",
                                extra={
                                    "action": "lease_lost",
                                    "worker": self.number,
                                    "token": str(claim.token),
                                    "part": name,
                                    "expected": expected,
                                    "held": held,
                                },
                            )
        except psycopg.Error as exc:
            self._database_trouble(exc)
            return False
        return True

    # ---- housekeeping ----------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        with self._pool.connection() as conn:
            queue.heartbeat(conn, self.worker_id, host_name(), os.getpid(), self.batches, self.records)
        self._next_heartbeat = now + HEARTBEAT_EVERY_S

    def _recover(self, now: float) -> None:
        with self._pool.connection() as conn:
            n = queue.recover_expired(conn, self.settings.max_retries)
        if n:
            log.warning(
                "expired claims recovered", extra={"action": "leases_recovered", "worker": self.number, "rows": n}
            )
        self._next_recovery = now + max(1.0, min(5.0, self.settings.lease_timeout / 4000.0))

    def _queue_empty(self) -> bool:
        try:
            with self._pool.connection() as conn:
                return queue.idle(conn)
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

    def _listen(self) -> psycopg.Connection | None:
        """The dedicated LISTEN connection (outside the pool), re-established when it breaks."""
        if self._listener is not None and not self._listener.closed:
            return self._listener
        now = time.monotonic()
        if now < self._listener_retry_at:
            return None
        try:
            self._listener = psycopg.connect(
                self.settings.database_url,
                autocommit=True,
                connect_timeout=5,
                application_name=f"workerpool:listen-{self.number}",
                **tcp_liveness(self.settings.database_url),
            )
            self._listener.execute(sql.SQL(Q.listen).format(sql.Identifier(NOTIFY_CHANNEL)))
        except psycopg.Error as exc:
            self._listener = None
            self._listener_retry_at = now + 2.0
            log.warning(
                "listen connection failed; polling",
                extra={
                    "action": "listen_failed",
                    "worker": self.number,
                    "error": describe_error(self.settings.database_url, exc),
                },
            )
        return self._listener

    def _wait_for_work(self) -> None:
        """Until a NOTIFY arrives, POLLING_INTERVAL passes, or a stop is asked for."""
        wait_s = self.settings.polling_interval / 1000.0
        deadline = time.monotonic() + (min(wait_s, DRAIN_RECHECK_S) if self.drain else wait_s)
        while not self.stopping and not self._parent_gone():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            conn = self._listen()
            if conn is None:
                self._sleep(min(0.25, left))
                continue
            try:
                for _ in conn.notifies(timeout=min(0.25, left), stop_after=1):
                    self._next_spill = 0.0  # the change that woke us is in the inbox
                    return
            except psycopg.Error as exc:
                log.warning(
                    "listen connection lost; polling until it is back",
                    extra={"action": "listen_lost", "worker": self.number, "error": one_line(exc)},
                )
                self._listener.close()
                self._listener = None

    def _sleep(self, seconds: float) -> None:
        """A sleep that a stop request cuts short."""
        end = time.monotonic() + seconds
        while not self.stopping and not self._parent_gone():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))


def _unsettled_rows(prepared: Prepared) -> list[QueueRow]:
    """A claim's rows that have no outcome yet."""
    o = prepared.outcome
    settled = (
        {i.row.id for i in o.done} | {r.id for r, _ in o.failed} | {r.id for r, _ in o.retry} | {r.id for r in o.unsent}
    )
    return [r for r in prepared.claim.rows if r.id not in settled]


def _unsettled(chunks: list[list[Item]], outcome: Outcome) -> list[QueueRow]:
    """Rows of these chunks that neither reached Algolia nor failed for good."""
    settled = {i.row.id for i in outcome.done} | {r.id for r, _ in outcome.failed}
    return [i.row for c in chunks for i in c if i.row.id not in settled]
