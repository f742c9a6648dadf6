"""A worker process: claim a batch, read the current rows, send records, acknowledge.

One loop, one thread. Every database call is a short autocommit statement; no transaction is ever
open while an Algolia request is in flight. The worker owns its pool, its LISTEN connection and its
Algolia transport, all created after fork.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Iterator

import orjson
import psycopg
import psycopg.types.json
from psycopg import sql
from psycopg.rows import dict_row

from . import metrics, queue, records
from .algolia import AlgoliaError, Sender
from .capture import Watched, load_transform, load_watched
from .config import Settings
from .db import DatabaseUnavailable, connect, describe_error, make_pool
from .logs import host_name
from .queue import Claim, QueueRow

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_BOOT_ERROR = 3  # reserved: the worker cannot start (bad DSN, schema missing); do not respawn blindly

NOTIFY_CHANNEL = "algolia_sync"
OBJECT_ID_COLUMN = "__workerpool_object_id"
VERSION_COLUMN = "__workerpool_version"
HASH_COLUMN = "__workerpool_hash"
SHAPE_COLUMN = "__workerpool_shape"
HIDDEN_COLUMNS = (OBJECT_ID_COLUMN, VERSION_COLUMN, HASH_COLUMN, SHAPE_COLUMN)
HEARTBEAT_EVERY_S = 5.0
CONFIG_REFRESH_S = 10.0
BOOT_RETRY_S = 5.0


class LeaseLost(Exception):
    """This worker's claim token no longer holds its rows: stop touching them."""


class Throttled(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"throttled for {retry_after}s")
        self.retry_after = retry_after


def compute_backoff(attempt: int, base_ms: int, cap_ms: int) -> int:
    """Capped exponential backoff with full jitter in [50%, 100%] (dramatiq's shape), in ms."""
    ceiling = min(cap_ms, base_ms * 2 ** max(0, attempt - 1))
    return int(ceiling * random.uniform(0.5, 1.0))


@dataclass
class Item:
    """One queue row on its way to Algolia."""

    row: QueueRow
    index: str
    action: str  # "partialUpdateObject", "updateObject", "deleteObject", or "skip" (unchanged: not sent)
    body: bytes
    hash: bytes | None = None
    shape: bytes | None = None


@dataclass
class Outcome:
    """What happened to a claim's rows; each row ends in exactly one list."""

    done: list[Item] = field(default_factory=list)
    failed: list[tuple[QueueRow, str]] = field(default_factory=list)  # permanent
    retry: list[tuple[QueueRow, str]] = field(default_factory=list)
    unsent: list[QueueRow] = field(default_factory=list)  # given back without spending an attempt


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
        self._transforms: dict[str, object] = {}
        self._watched_at = 0.0
        self._next_heartbeat = 0.0
        self._next_recovery = 0.0
        self._pending_ack: tuple[Claim, Outcome] | None = None
        self._db_failures = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: stop claiming and finish. Second: exit now."""
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)

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
            extra={"action": "worker_started", "worker": self.number, "worker_id": self.worker_id,
                   "batch_size": self.settings.batch_size, "pool_size": self.settings.pool_size},
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
            self._flush_pending_ack()
        finally:
            self._shutdown()
        log.info("worker stopped", extra={"action": "worker_stopped", "worker": self.number,
                                          "batches": self.batches, "records": self.records})
        return EXIT_OK

    def _boot(self) -> None:
        # Ride out a short outage (a Postgres restart), then fail with the reserved code so that
        # the supervisor can tell "cannot start" from "crashed".
        deadline = time.monotonic() + BOOT_RETRY_S
        while True:
            try:
                with connect(self.settings.database_url, purpose="boot", timeout=5) as conn:
                    exists = conn.execute("SELECT to_regproc('get_pending_algolia_syncs') IS NOT NULL").fetchone()[0]
                break
            except DatabaseUnavailable:
                if time.monotonic() >= deadline or self.stopping or self._parent_gone():
                    raise
                time.sleep(0.5)
        if not exists:
            raise DatabaseUnavailable("the workerpool schema is missing in DATABASE_URL; run `workerpool migrate` first")
        psycopg.types.json.set_json_loads(orjson.loads)  # json/jsonb columns: C instead of the stdlib
        self._pool = make_pool(self.settings.database_url, self.settings.pool_size, f"worker-{self.number}")
        self._sender = Sender(self.settings)

    def _shutdown(self) -> None:
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
        """One iteration: housekeeping, then claim and process a batch. False when nothing was due."""
        try:
            self._flush_pending_ack()
            if self._pending_ack is not None:
                return True  # never claim more while an outcome is still unwritten
            now = time.monotonic()
            if now >= self._next_heartbeat:
                self._heartbeat(now)
            if now >= self._next_recovery:
                self._recover(now)
            with self._pool.connection() as conn:
                claim = queue.claim_batch(conn, self.batch_limit, self.settings.lease_timeout, self.worker_id, now)
            self._db_failures = 0
        except psycopg.Error as exc:
            self._database_trouble(exc)
            return True
        if claim is None:
            return False
        self._process(claim)
        return True

    def _process(self, claim: Claim) -> None:
        started = time.monotonic()
        outcome = Outcome()
        try:
            items = self._prepare(claim, outcome)
            self._send(claim, items, outcome)
        except LeaseLost:
            log.warning("lease lost", extra={"action": "lease_lost", "worker": self.number, "token": str(claim.token),
                                             "batch": len(claim.rows)})
            return
        except psycopg.Error as exc:
            # Reading the rows failed; give the whole claim back (attempt counted) and carry on.
            self._database_trouble(exc)
            outcome = Outcome(retry=[(r, f"database error: {_one_line(exc)}") for r in claim.rows])
        counts = {
            "upserts": sum(1 for i in outcome.done if i.action in ("updateObject", "partialUpdateObject")),
            "deletes": sum(1 for i in outcome.done if i.action == "deleteObject"),
            "skipped": sum(1 for i in outcome.done if i.action == "skip"),
            "failed": len(outcome.failed), "retried": len(outcome.retry), "released": len(outcome.unsent),
        }
        metrics.record_batch(self, claim, outcome, started)  # before the flush, which empties the outcome's lists
        self._pending_ack = (claim, outcome)
        self._flush_pending_ack()
        self.batches += 1
        self.records += counts["upserts"] + counts["deletes"] + counts["skipped"]
        log.info(
            "batch synced",
            extra={
                "action": "batch_synced", "worker": self.number, "batch": len(claim.rows), **counts,
                "duration_ms": round((time.monotonic() - started) * 1000, 1), "batch_limit": self.batch_limit,
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
        """Load the current rows for the claim (one query per table) and serialize their actions."""
        by_table: dict[str, list[QueueRow]] = {}
        for row in claim.rows:
            by_table.setdefault(row.table_name, []).append(row)
        items: list[Item] = []
        prefix = self.settings.algolia_index_prefix
        with self._pool.connection() as conn:
            for table, rows in by_table.items():
                watched = self._config_for(conn, table)
                if watched is None:
                    outcome.failed.extend((r, f"table {table} is not watched (no row in algolia_index_config)") for r in rows)
                    continue
                index = prefix + watched.index_name
                current = self._load_rows(conn, watched, index, [r.record_id for r in rows])
                for row in rows:
                    item = self._item(watched, index, row, current.get(row.record_id), outcome)
                    if item is not None:
                        items.append(item)
        return items

    def _item(self, watched: Watched, index: str, row: QueueRow, found: dict | None, outcome: Outcome) -> Item | None:
        """One row's action: delete, skip (unchanged), or a versioned write; None when it failed."""
        if found is None:
            return Item(row, index, "deleteObject", records.delete_action(index, row.record_id))
        version, old_hash, old_shape = found[VERSION_COLUMN], found[HASH_COLUMN], found[SHAPE_COLUMN]
        record = records.to_record(found, row.record_id, HIDDEN_COLUMNS)
        if watched.attributes is not None:
            record = {k: record[k] for k in (*watched.attributes, records.OBJECT_ID) if k in record}
        if watched.transform:
            try:
                record = self._transform(watched.transform)(record)
            except Exception as exc:  # the user's code: fail this record only
                outcome.failed.append((row, f"transform {watched.transform} raised {type(exc).__name__}: {_one_line(exc)}"))
                return None
            if record is None:
                return Item(row, index, "deleteObject", records.delete_action(index, row.record_id))
            record = {**record, records.OBJECT_ID: row.record_id}
        record.pop(records.VERSION, None)
        try:
            body = records.dumps(record)
        except TypeError as exc:  # a value orjson cannot represent
            outcome.failed.append((row, f"cannot serialize record: {exc}"))
            return None
        limit = self.settings.max_record_bytes
        if limit and len(body) > limit:
            outcome.failed.append((row, f"record {row.record_id} is {len(body)} bytes, over MAX_RECORD_BYTES={limit}"))
            return None
        digest, shape = records.content_hash(body), records.shape_hash(record)
        reindex = row.operation == "REINDEX"
        if digest == old_hash and not reindex:
            return Item(row, index, "skip", b"", digest, shape)
        action, payload = records.versioned_action(index, body, version, replace=reindex or shape != old_shape)
        return Item(row, index, action, payload, digest, shape)

    def _transform(self, spec: str):
        if spec not in self._transforms:
            self._transforms[spec] = load_transform(spec)
        return self._transforms[spec]

    def _load_rows(self, conn: psycopg.Connection, watched: Watched, index: str, keys: list[str]) -> dict[str, dict]:
        """Current rows by key, each with a fresh version and the hashes of what was last sent."""
        query = sql.SQL(
            "SELECT s.{key}::text AS {oid}, (SELECT nextval('algolia_sync_version_seq')) AS {version}, "
            "h.hash AS {hash}, h.shape AS {shape}, s.* "
            "FROM {source} s LEFT JOIN algolia_sync_hashes h ON h.index_name = %s AND h.object_id = s.{key}::text "
            "WHERE s.{key} = ANY(%s::text[]::{ktype}[])"
        ).format(
            key=sql.Identifier(watched.key_column),
            oid=sql.Identifier(OBJECT_ID_COLUMN),
            version=sql.Identifier(VERSION_COLUMN),
            hash=sql.Identifier(HASH_COLUMN),
            shape=sql.Identifier(SHAPE_COLUMN),
            source=sql.SQL(watched.source_view or watched.table_name),
            ktype=sql.SQL(watched.key_type),
        )
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, (index, queue.text_array(keys)), prepare=True)
            return {r[OBJECT_ID_COLUMN]: r for r in cur.fetchall()}

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
            except AlgoliaError as exc:
                error = _one_line(exc.message)
                log.warning("algolia error", extra={"action": "algolia_error", "worker": self.number,
                                                    "status": exc.status, "error": error})
                outcome.retry.extend((row, error) for row in _unsettled(chunks[n:], outcome))
                return
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
            if not exc.permanent:
                raise
            if len(chunk) == 1:
                outcome.failed.append((chunk[0].row, f"algolia {exc.status}: {_one_line(exc.message)}"))
                return
            middle = len(chunk) // 2
            self._send_chunk(claim, chunk[:middle], outcome)
            self._send_chunk(claim, chunk[middle:], outcome)
            return
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
        log.warning("algolia throttled", extra={"action": "throttled", "worker": self.number,
                                                "retry_after_s": retry_after, "batch_limit": self.batch_limit})
        self._sleep(retry_after)

    def _shutdown_budget_spent(self) -> bool:
        return time.monotonic() - self.stop_requested_at > self.settings.shutdown_timeout / 2000.0

    # ---- acknowledge -----------------------------------------------------------------------

    def _flush_pending_ack(self) -> None:
        """Write a claim's outcome; kept and retried if the database is away (nothing is lost).

        Each part is cleared once written, so a retry after a failure halfway never writes twice.
        """
        if self._pending_ack is None:
            return
        claim, outcome = self._pending_ack
        s = self.settings
        parts = (
            ("done", lambda conn, o: queue.ack(conn, claim.token, o.done)),
            ("failed", lambda conn, o: queue.release(conn, claim.token, [r.id for r, _ in o.failed],
                                                     [e for _, e in o.failed], [0] * len(o.failed),
                                                     [True] * len(o.failed), s.max_retries)),
            ("retry", lambda conn, o: queue.release(conn, claim.token, [r.id for r, _ in o.retry],
                                                    [e for _, e in o.retry],
                                                    [compute_backoff(r.attempts, s.retry_backoff, s.retry_backoff_max)
                                                     for r, _ in o.retry],
                                                    [False] * len(o.retry), s.max_retries)),
            ("unsent", lambda conn, o: queue.release(conn, claim.token, [r.id for r in o.unsent],
                                                     ["released unsent"] * len(o.unsent), [0] * len(o.unsent),
                                                     [False] * len(o.unsent), s.max_retries, count_attempt=False)),
        )
        try:
            with self._pool.connection() as conn:
                for name, write in parts:
                    expected = len(getattr(outcome, name))
                    if expected:
                        held = write(conn, outcome)
                        setattr(outcome, name, [])
                        if held < expected:
                            log.warning("lease lost", extra={
                                "action": "lease_lost", "worker": self.number, "token": str(claim.token),
                                "part": name, "expected": expected, "held": held})
        except psycopg.Error as exc:
            self._database_trouble(exc)
            return
        self._pending_ack = None

    # ---- housekeeping ----------------------------------------------------------------------

    def _heartbeat(self, now: float) -> None:
        with self._pool.connection() as conn:
            queue.heartbeat(conn, self.worker_id, host_name(), os.getpid(), self.batches, self.records)
        self._next_heartbeat = now + HEARTBEAT_EVERY_S

    def _recover(self, now: float) -> None:
        with self._pool.connection() as conn:
            n = queue.recover_expired(conn, self.settings.max_retries)
        if n:
            log.warning("expired claims recovered", extra={"action": "leases_recovered", "worker": self.number, "rows": n})
        self._next_recovery = now + max(1.0, min(5.0, self.settings.lease_timeout / 4000.0))

    def _queue_empty(self) -> bool:
        try:
            with self._pool.connection() as conn:
                return conn.execute(
                    "SELECT NOT EXISTS (SELECT 1 FROM algolia_sync_queue WHERE status IN ('pending', 'processing'))"
                ).fetchone()[0]
        except psycopg.Error as exc:
            self._database_trouble(exc)
            return False

    def _database_trouble(self, exc: BaseException) -> None:
        self._db_failures += 1
        if self._pool is not None:
            self._pool.check()  # drop every broken idle connection now, not one failed call at a time
        delay = min(5.0, 0.1 * 2 ** min(self._db_failures, 6))
        log.warning("database error", extra={"action": "database_error", "worker": self.number,
                                             "error": _one_line(exc), "retry_in_s": round(delay, 2)})
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
            self._listener = psycopg.connect(self.settings.database_url, autocommit=True, connect_timeout=5,
                                             application_name=f"workerpool:listen-{self.number}")
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            self._listener = None
            self._listener_retry_at = now + 2.0
            log.warning("listen connection failed; polling", extra={
                "action": "listen_failed", "worker": self.number,
                "error": describe_error(self.settings.database_url, exc)})
        return self._listener

    def _wait_for_work(self) -> None:
        """Until a NOTIFY arrives, POLLING_INTERVAL passes, or a stop is asked for."""
        wait_s = self.settings.polling_interval / 1000.0
        deadline = time.monotonic() + (min(wait_s, 0.2) if self.drain else wait_s)
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
                    return
            except psycopg.Error as exc:
                log.warning("listen connection lost; polling until it is back", extra={
                    "action": "listen_lost", "worker": self.number, "error": _one_line(exc)})
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


def _unsettled(chunks: list[list[Item]], outcome: Outcome) -> list[QueueRow]:
    """Rows of these chunks that neither reached Algolia nor failed for good."""
    settled = {i.row.id for i in outcome.done} | {r.id for r, _ in outcome.failed}
    return [i.row for c in chunks for i in c if i.row.id not in settled]


def _one_line(value: object) -> str:
    return " ".join(str(value).split())[:2000]
