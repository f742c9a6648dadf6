"""`DatabaseService`: the queue, claimed and settled from the caller's own loop with the workers' operations."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from workerpool.api.results import BareAck, BatchResult, SyncResult
from workerpool.capture.model import Watched, find_watched
from workerpool.config import Settings
from workerpool.db import pooling
from workerpool.db.connection import PinnedPool, connect, make_pool
from workerpool.db.version import check_schema
from workerpool.logs import host_name
from workerpool.runtime import queue
from workerpool.runtime.acks import write_outcome
from workerpool.runtime.model import Batch, Item, Outcome, SyncItem

log = logging.getLogger(__name__)


class DatabaseService:
    """The workers' queue operations for a loop of your own: claim, extend, complete, fail, give back.

    Every call is one short autocommit statement of the same SQL functions the workers run
    (`get_pending_algolia_syncs`, `algolia_sync_ack`, `algolia_sync_release`), under a lease and a claim
    token, so a custom loop and `workerpool run` can share one queue: the workers themselves claim,
    extend and settle through this class. Two forms: per claim (`claim`, `extend`, `settle_batch`,
    with `AlgoliaService.sync`), the workers' own, where the caller holds the `Batch`; and per item
    (`get_pending_syncs`, `settle`, `mark_completed`, `mark_failed`, `give_back`, `extend_lease`),
    where the service remembers the rows it handed out: a row can only be completed or failed by the
    service that claimed it, and only while its lease holds (after that, another worker may have it).

    `database` is a DSN, or an existing `psycopg_pool.ConnectionPool` whose connections are in
    autocommit mode with an ISO `DateStyle` (the only one psycopg reads timestamps in). Rows are read
    under the workers' pinned settings and loaders, on the service's own pool or one extra connection.

    Examples:
        >>> from workerpool import DatabaseService, Settings
        >>> settings = Settings.from_env()
        >>> with DatabaseService(settings.database_url, settings) as db:
        ...     items = db.get_pending_syncs(100)
    """

    def __init__(
        self, database: str | ConnectionPool, settings: Settings | None = None, worker_name: str | None = None
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        pooling.use(self.settings.database_pool_mode)
        self.worker_name = worker_name or f"{host_name()}:api:{uuid.uuid4().hex[:8]}"
        self._claims: dict[uuid.UUID, Batch] = {}  # the item-level form's claims
        self._rows: dict[int, tuple[SyncItem, uuid.UUID]] = {}  # their rows not yet settled
        self._left: dict[uuid.UUID, int] = {}  # per claim: how many of its rows are not yet settled
        self._lock = threading.Lock()
        self._next_recovery = 0.0
        self._read_conn: psycopg.Connection[Any] | None = None
        self._version_checked = False
        if isinstance(database, ConnectionPool):
            conninfo = database.conninfo
            self._pool, self._own_pool = database, False
            self._dsn = conninfo() if callable(conninfo) else conninfo
        else:
            self._pool = make_pool(database, self.settings.pool_size, "api")
            self._own_pool, self._dsn = True, database
        self._pinned = isinstance(self._pool, PinnedPool)  # its connections read rows as the workers do

    # ---- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Close what the service opened (a pool you passed in stays open). Rows still claimed come
        back to the queue when their lease expires; `give_back` them first to skip that wait."""
        if self._read_conn is not None:
            self._read_conn.close()
        if self._own_pool:
            self._pool.close()

    def __enter__(self) -> DatabaseService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- claim -----------------------------------------------------------------------------

    def claim(self, batch_size: int, *, spill: bool = True, recover: bool = True) -> Batch:
        """Claim up to `batch_size` due rows under a fresh token and a lease of LEASE_TIMEOUT ms; an
        empty `Batch` when nothing is due. Keys another live claim holds are never claimed.

        First, as a worker does: with `spill`, keys the capture triggers wrote are moved into the
        queue (`Batch.spilled` says how many queue rows that made or merged); with `recover`, expired
        claims (a crashed loop's) are returned to it, every few seconds. A worker passes False for
        what its own schedule does. The first claim raises `ConfigError` if the database's schema is
        newer or older than this code's (`workerpool migrate`, or upgrade workerpool).

        Examples:
            >>> batch = db.claim(500)
            >>> len(batch), batch.token
            (500, UUID('...'))
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be at least 1")
        now = time.monotonic()
        with self._pool.connection() as conn:
            if not self._version_checked:  # a schema newer or older than this code: ConfigError, once
                check_schema(conn)
                self._version_checked = True
            if recover and now >= self._next_recovery:
                queue.recover_expired(conn, self.settings.max_retries)
                self._next_recovery = now + queue.recovery_interval_s(self.settings.lease_timeout)
            spilled = self._spill(conn, batch_size) if spill else None
            batch = queue.claim_batch(conn, batch_size, self.settings.lease_timeout, self.worker_name, now)
        if batch is None:
            batch = Batch(uuid.uuid4(), [], now, self.settings.lease_timeout / 1000.0)
        batch.spilled = spilled
        return batch

    def get_pending_syncs(self, batch_size: int) -> list[SyncItem]:
        """Claim up to `batch_size` due rows, as `claim` does, for settling item by item; [] when
        nothing is due. The service remembers them until they are settled.

        Examples:
            >>> items = db.get_pending_syncs(100)   # [] when nothing is due
        """
        batch = self.claim(batch_size)
        if batch:
            with self._lock:
                self._claims[batch.token] = batch
                self._left[batch.token] = len(batch.rows)
                for row in batch.rows:
                    self._rows[row.id] = (row, batch.token)
        return list(batch.rows)

    def extend(self, batch: Batch) -> bool:
        """Push a claim's lease forward by LEASE_TIMEOUT; False when it was already lost (its rows are
        no longer yours: drop their work). `AlgoliaService` does so before each request once a third
        of the lease has gone; call it when your own work on a batch takes that long.

        Examples:
            >>> if not db.extend(batch):
            ...     print("lease lost: another worker took the rows back")
        """
        now = time.monotonic()
        with self._pool.connection() as conn:
            return queue.extend(conn, batch, now)

    def extend_lease(self) -> bool:
        """`extend` every claim of `get_pending_syncs` not yet settled; False when one was already
        lost. Call it when a batch takes longer than about a third of the lease.

        Examples:
            >>> if not db.extend_lease():
            ...     print("lease lost: another worker took the rows back")
        """
        with self._lock:
            claims = list(self._claims.values())
        held = [self.extend(claim) for claim in claims]  # every claim, even after a lost one
        return all(held)

    # ---- settle ----------------------------------------------------------------------------

    def settle_batch(self, result: BatchResult) -> int:
        """Write what `AlgoliaService.sync` did to a batch, as the workers do, in one statement per
        part: sent or unchanged rows are acknowledged (logged, their hashes kept), `retry` ones retried
        with backoff, `failed` ones failed for good, `unsent` ones given back without spending an
        attempt. A `lost` result writes nothing. Returns how many rows the claim still held (the rest
        had been taken over after its lease expired). After a database error, call it again: the
        parts already written are not written twice.

        Examples:
            >>> db.settle_batch(algolia.sync(db.claim(500)))
            500
        """
        if result.lost:
            return 0
        if result.unwritten is None:
            o = result.outcome
            result.unwritten = replace(
                o, done=list(o.done), failed=list(o.failed), retry=list(o.retry), unsent=list(o.unsent)
            )
        left = result.unwritten
        rows = len(left.done) + len(left.failed) + len(left.retry) + len(left.unsent)
        with self._pool.connection() as conn:
            lost = write_outcome(conn, result.batch, left, self.settings)
        for part, expected, held in lost:
            log.warning(
                "lease lost",
                extra={
                    "action": "lease_lost",
                    "worker_id": self.worker_name,
                    "token": str(result.batch.token),
                    "part": part,
                    "expected": expected,
                    "held": held,
                },
            )
        return rows - sum(expected - held for _, expected, held in lost)

    def mark_completed(self, queue_id: int, algolia_object_id: str, result: SyncResult | None = None) -> bool:
        """Acknowledge one row: it leaves the queue and is logged in algolia_sync_log. Pass the
        `SyncResult` when you have it: the log then records the action and index, and the record's
        hashes are kept so that an unchanged record is skipped next time. Without it the service
        cannot know what you sent: the log row has no action or index, no hash is kept, and the
        key's next sync sends its record instead of skipping it. False when the lease was lost.

        Examples:
            >>> db.mark_completed(item.id, item.record_id)
            True
        """
        return self.mark_completed_many([self._completed(queue_id, algolia_object_id, result)]) == 1

    def mark_completed_many(self, results: Iterable[SyncResult]) -> int:
        """Acknowledge many rows in one statement per claim; returns how many were still held.

        Examples:
            >>> db.mark_completed_many(r for r in results if r.status == "completed")
        """
        outcomes: dict[uuid.UUID, Outcome] = {}
        for r in results:
            row, token = self._held(r.queue_id)
            outcomes.setdefault(token, Outcome()).done.append(_acked(r, row))
        return self._write(outcomes)

    def mark_failed(self, queue_id: int, error_message: str, permanent: bool = False) -> bool:
        """Give a row back to be retried after a backoff (RETRY_BACKOFF, doubled per attempt, capped
        at RETRY_BACKOFF_MAX, jittered); at MAX_RETRIES attempts, or with `permanent`, it becomes
        `failed` with `error_message` as its last_error, as the workers do. False when the lease was lost.

        Examples:
            >>> db.mark_failed(item.id, "upstream service timed out")
            True
        """
        return self.mark_failed_many([(queue_id, error_message)], permanent=permanent) == 1

    def mark_failed_many(self, failures: Iterable[tuple[int, str]], permanent: bool = False) -> int:
        """`mark_failed` for many `(queue_id, error_message)` pairs, one statement per claim.

        Examples:
            >>> db.mark_failed_many([(item.id, "bad data") for item in items], permanent=True)
        """
        outcomes: dict[uuid.UUID, Outcome] = {}
        for queue_id, error in failures:
            row, token = self._held(queue_id)
            outcome = outcomes.setdefault(token, Outcome())
            (outcome.failed if permanent else outcome.retry).append((row, error))
        return self._write(outcomes)

    def give_back(self, queue_ids: Iterable[int]) -> int:
        """Return claimed rows to the queue at once without spending an attempt (a loop shutting
        down, work it will not do); returns how many were still held.

        Examples:
            >>> db.give_back(item.id for item in items)
        """
        outcomes: dict[uuid.UUID, Outcome] = {}
        for queue_id in queue_ids:
            row, token = self._held(queue_id)
            outcomes.setdefault(token, Outcome()).unsent.append(row)
        return self._write(outcomes)

    def settle(self, results: Iterable[SyncResult]) -> int:
        """Write every outcome of `AlgoliaService.sync_batch` as a worker does: completed rows are
        acknowledged, `retry` ones retried with backoff, `failed` ones failed for good, `unsent` ones
        given back without spending an attempt; `lost` ones are left alone. Returns how many rows
        this service still held.

        Examples:
            >>> db.settle(algolia.sync_batch(db.get_pending_syncs(100)))
        """
        outcomes: dict[uuid.UUID, Outcome] = {}
        lost = []
        for r in results:
            if r.status == "lost":
                lost.append(r.queue_id)
                continue
            row, token = self._held(r.queue_id)
            outcome = outcomes.setdefault(token, Outcome())
            if r.status == "completed":
                outcome.done.append(_acked(r, row))
            elif r.status == "retry":
                outcome.retry.append((row, r.error or ""))
            elif r.status == "failed":
                outcome.failed.append((row, r.error or ""))
            else:
                outcome.unsent.append(row)
        self._forget(lost)
        return self._write(outcomes)

    def idle(self) -> bool:
        """Whether nothing is left to sync: no key pending (due or backing off) or being processed,
        in the queue or in the triggers' inbox. A loop that should stop once caught up checks it when
        `get_pending_syncs` returns nothing.

        Examples:
            >>> while not db.idle():
            ...     db.settle(algolia.sync_batch(db.get_pending_syncs(100)))
        """
        with self._pool.connection() as conn:
            return queue.idle(conn)

    # ---- configuration ---------------------------------------------------------------------

    def get_index_config(self, table_name: str) -> Watched:
        """The registration of a watched table (index, key, source view, attributes, transform),
        named as `watch` accepts it; raises `WatchError` when it is not watched.

        Examples:
            >>> db.get_index_config("products").index_name
            'products'
        """
        with self._pool.connection() as conn:
            return find_watched(conn, table_name)

    # ---- internals -------------------------------------------------------------------------

    def _completed(self, queue_id: int, object_id: str, result: SyncResult | None) -> SyncResult:
        row, _ = self._held(queue_id)
        if object_id != row.record_id:
            raise ValueError(
                f"algolia_object_id={object_id!r} is not the objectID of queue row {queue_id} ({row.record_id!r})"
            )
        if result is not None and result.queue_id != queue_id:
            raise ValueError(f"result is for queue row {result.queue_id}, not {queue_id}")
        return result or SyncResult(queue_id, row.table_name, row.record_id, "completed")

    def _write(self, outcomes: dict[uuid.UUID, Outcome]) -> int:
        """Write each claim's outcome with the workers' own writer; returns how many rows were held."""
        held = 0
        with self._pool.connection() as conn:
            for token, outcome in outcomes.items():
                rows = [i.row.id for i in outcome.done] + [r.id for r in outcome.unsent]
                rows += [r.id for part in (outcome.failed, outcome.retry) for r, _ in part]
                lost = write_outcome(conn, self._claims[token], outcome, self.settings)
                held += len(rows) - sum(expected - kept for _, expected, kept in lost)
                self._forget(rows)
        return held

    def _spill(self, conn: psycopg.Connection[Any], claim_size: int) -> int:
        moved = queue.spill(conn, claim_size)
        if moved is None:  # another transaction holds a pending row of one of those keys: try again soon
            extra = {"action": "spill_lock_wait", "worker_id": self.worker_name}
            log.debug("inbox spill gave way to a lock; retrying", extra=extra)
            return 0
        return moved

    def claims_of(self, rows: Sequence[SyncItem]) -> list[tuple[Batch, list[SyncItem]]]:
        """`rows` grouped by the claim holding them (api/seam.py); a ValueError for a row not held here."""
        groups: dict[uuid.UUID, list[SyncItem]] = {}
        for row in rows:
            groups.setdefault(self._held(row.id)[1], []).append(row)
        with self._lock:
            return [(self._claims[token], part) for token, part in groups.items()]

    def _held(self, queue_id: int) -> tuple[SyncItem, uuid.UUID]:
        """The claimed row and its token; a ValueError naming the id if this service holds no such row."""
        with self._lock:
            held = self._rows.get(queue_id)
        if held is None:
            raise ValueError(f"queue row {queue_id!r} is not claimed by this DatabaseService (or is already settled)")
        return held

    def _forget(self, queue_ids: Iterable[int]) -> None:
        """Settled rows: no longer this service's; a claim with no row left is dropped."""
        with self._lock:
            for queue_id in queue_ids:
                held = self._rows.pop(queue_id, None)
                if held is not None:
                    self._left[held[1]] -= 1
                    if not self._left[held[1]]:
                        del self._left[held[1]], self._claims[held[1]]

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection that reads rows as the workers do (api/seam.py): pinned settings, value loaders."""
        if self._pinned:
            with self._pool.connection() as conn:
                yield conn
            return
        with self._lock:
            if self._read_conn is None or self._read_conn.closed:
                self._read_conn = connect(self._dsn, purpose="api-read")
            conn = self._read_conn
        yield conn


def _acked(result: SyncResult, row: SyncItem) -> Item:
    """What the ack writes for a completed result: the built item when the result has it, else the
    row and action alone (no index, no hash: `mark_completed` without a `SyncResult`), a `BareAck`,
    which `queue.ack` reads as `Acked` though `Outcome.done` is typed for the workers' `Item`s."""
    if result._item is not None:
        return result._item
    return BareAck(row, result.action, None, None, None)  # type: ignore[return-value]
