"""`AlgoliaService`: claimed rows to records to Algolia, with the workers' Reader and Dispatcher."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import psycopg

from workerpool.api.database import DatabaseService
from workerpool.api.results import BatchResult, SyncResult, lost
from workerpool.api.seam import ClaimStore
from workerpool.config import Settings
from workerpool.logs import one_line
from workerpool.runtime.algolia import Sender
from workerpool.runtime.claim_size import ClaimSize
from workerpool.runtime.dispatch import Dispatcher, LeaseLost
from workerpool.runtime.model import Batch, Outcome, SyncItem
from workerpool.runtime.reading import Reader
from workerpool.runtime.searchable import TaskTracker, task_status_getter

log = logging.getLogger(__name__)


class AlgoliaService:
    """Reads the current rows of claimed items, builds their records and sends them: the workers send
    every batch through this class.

    Records are read and built by the workers' `Reader` and `Shaper` (source views, `--attributes`,
    transforms, `_version` guards, skip-unchanged through the last-sent hashes) and sent by their
    `Dispatcher` and `Sender` (pre-serialized multipleBatch requests over the algoliasearch transport,
    to ALGOLIA_HOSTS when set). A row that cannot be read or built, or a record Algolia rejects,
    fails alone; the rest of the batch goes on. Index names get ALGOLIA_INDEX_PREFIX. Before each
    request the claim's lease is extended once a third of it has gone; a claim whose lease is gone
    comes back `lost`.

    On a 429 or refused credentials (401/403) the rest of the batch comes back `unsent` at once;
    `wait`, when given, is called first with how long to wait (the Retry-After, or a growing backoff),
    on the thread that sends. `out_of_time`, when given, is asked before each request; once it says
    True the rest comes back `unsent` (a loop shutting down). `batch_limit` is the workers' adaptive
    claim size: BATCH_SIZE, doubled while claims come back full (report them with `claimed`) up to
    BATCH_SIZE_MAX, halved on each 429. `worker` is the number log lines give as `worker`.

    Examples:
        >>> from workerpool import AlgoliaService, DatabaseService, Settings
        >>> settings = Settings.from_env()
        >>> db = DatabaseService(settings.database_url, settings)
        >>> algolia = AlgoliaService(db)
        >>> results = algolia.sync_batch(db.get_pending_syncs(100))
        >>> db.settle(results)
    """

    def __init__(
        self,
        database: DatabaseService,
        settings: Settings | None = None,
        *,
        wait: Callable[[float], None] | None = None,
        out_of_time: Callable[[], bool] | None = None,
        worker: int = 0,
    ) -> None:
        self.settings = settings if settings is not None else database.settings
        self.worker = worker
        self._db: ClaimStore = database  # only what api/seam.py names
        self._reader = Reader(self.settings)
        self._claim_size = ClaimSize(self.settings)
        self._wait = wait or (lambda seconds: None)
        self._out_of_time = out_of_time or (lambda: False)
        self._dispatcher: Dispatcher | None = None
        self._tracker: TaskTracker | None = None  # follows sent tasks to publication (runtime/searchable.py)
        self._lock = threading.Lock()

    @property
    def building(self) -> tuple[SyncItem, float] | None:
        """The row whose record `read` is building now, and since when (time.monotonic()), or None."""
        return self._reader.shaper.building

    def close(self) -> None:
        """Close the HTTP transport and stop following tasks (the DatabaseService is closed separately)."""
        if self._tracker is not None:
            self._tracker.stop()
            self._tracker = None
        if self._dispatcher is not None:
            self._dispatcher.sender.close()
            self._dispatcher = None

    def __enter__(self) -> AlgoliaService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- per claim -------------------------------------------------------------------------

    def sync(self, batch: Batch) -> BatchResult:
        """Read, build and send a claimed batch; settle the result with `DatabaseService.settle_batch`.

        Nothing is written to the queue here: until the result is settled, the rows stay claimed.
        The same as `send(read(batch))`, the two halves a pipelined loop runs on different threads.

        Examples:
            >>> result = algolia.sync(db.claim(500))
            >>> db.settle_batch(result)
            500
        """
        return self.send(self.read(batch))

    def read(self, batch: Batch) -> BatchResult:
        """The first half of `sync`, on the database: read the batch's current rows and build their
        records. Rows that need no request (unchanged) or cannot be built already have their outcome.
        Transforms run under TRANSFORM_TIMEOUT only on the main thread, so call it there. A lost
        connection retries every row (`database_error` says why).

        Examples:
            >>> result = algolia.read(batch)     # on the main thread
            >>> algolia.send(result)              # on any thread
        """
        return self._read(batch, batch.rows)

    def send(self, result: BatchResult) -> BatchResult:
        """The second half of `sync`, over HTTP: send the records `read` built and record what Algolia
        answered; safe to call from several threads at once, each with its own result. A database
        error while extending the lease is raised (the rows come back when the lease expires).

        Examples:
            >>> future = executor.submit(algolia.send, algolia.read(batch))
        """
        items, result.built = result.built, None
        if items is None:  # reading failed, or sent already
            return result
        try:
            self._dispatcher_for().send(result.batch, items, result.outcome)
        except LeaseLost:
            result.lost = True
        except psycopg.Error:
            raise
        except Exception as exc:  # a defect in sending: what was not sent retries
            log.exception("sending a batch failed", extra={"action": "send_failed", "worker": self.worker})
            error = f"internal error: {type(exc).__name__}: {one_line(exc)}"
            result.outcome.retry.extend((r, error) for r in result.outcome.unsettled(result.batch.rows))
        return result

    @property
    def batch_limit(self) -> int:
        """How many rows the next claim should ask for: the workers' adaptive claim size
        (`runtime.claim_size.ClaimSize`, one per service; `batch_limit` is its public name).

        Examples:
            >>> batch = db.claim(algolia.batch_limit)
        """
        return self._claim_size.current

    def claimed(self, got: int, asked: int) -> bool:
        """Report a claim that asked for `asked` rows and got `got` (grows `batch_limit` after a full
        one, returns it to BATCH_SIZE after a short one); returns whether it came back short.

        Examples:
            >>> asked = algolia.batch_limit
            >>> short = algolia.claimed(len(db.claim(asked)), asked)
        """
        return self._claim_size.claimed(got, asked)

    def index_of(self, table: str) -> str:
        """The index a table's records go to, with ALGOLIA_INDEX_PREFIX (the table's own name when it
        is not watched, or not read yet).

        Examples:
            >>> algolia.index_of("products")
            'products'
        """
        return self._reader.index_of(table)

    # ---- per item --------------------------------------------------------------------------

    def sync_batch(self, sync_items: Sequence[SyncItem]) -> list[SyncResult]:
        """Sync claimed items; one `SyncResult` per item, in the items' order, for
        `DatabaseService.settle` (or `mark_completed` / `mark_failed`).

        Nothing is written to the queue here: until the results are settled, the rows stay claimed.
        A lost database connection while reading returns every item as `retry`; throttling (429)
        or refused credentials (401/403) return the items not yet sent as `unsent`.

        Examples:
            >>> for r in algolia.sync_batch(items):
            ...     if r.status == "completed":
            ...         db.mark_completed(r.queue_id, r.object_id, r)
            ...     elif r.status in ("retry", "failed"):
            ...         db.mark_failed(r.queue_id, r.error or "", permanent=r.status == "failed")
        """
        results: dict[int, SyncResult] = {}
        for claim, part in self._db.claims_of(list(sync_items)):
            result = self.send(self._read(claim, part))
            if result.lost:
                results.update((r.id, lost(r)) for r in part)
            else:
                results.update((r.queue_id, r) for r in result.results())
        return [results[item.id] for item in sync_items]

    # ---- internals -------------------------------------------------------------------------

    def _read(self, batch: Batch, rows: list[SyncItem]) -> BatchResult:
        result = BatchResult(batch)
        try:
            with self._db.reading() as conn:
                result.built = self._reader.items(conn, rows, result.outcome)
        except psycopg.Error as exc:  # the connection or the server, not the rows: all of them retry
            result.database_error = exc
            result.outcome = Outcome(retry=[(r, f"database error: {one_line(exc)}") for r in rows])
        except Exception as exc:  # a defect, not the data's fault: the rows retry, the loop lives
            log.exception("preparing a batch failed", extra={"action": "prepare_failed", "worker": self.worker})
            result.outcome = Outcome(
                retry=[(r, f"internal error: {type(exc).__name__}: {one_line(exc)}") for r in rows]
            )
        return result

    def _dispatcher_for(self) -> Dispatcher:
        """The workers' sending policy, made on first use (it needs the Algolia credentials)."""
        with self._lock:
            if self._dispatcher is None:
                self.settings.require_algolia()
                self._tracker = TaskTracker(
                    self.settings.task_tracking, task_status_getter(self.settings), self._db.reading, self.worker
                )
                self._tracker.start()
                self._dispatcher = Dispatcher(
                    self.settings,
                    self.worker,
                    Sender(self.settings),
                    self._ensure_lease,
                    self._out_of_time,
                    self._wait,
                    claim_size=self._claim_size,
                    tracker=self._tracker,
                )
            return self._dispatcher

    def _ensure_lease(self, batch: Batch) -> None:
        """Before each request: refuse to send under a lease that is gone; extend one that is ageing."""
        if batch.lease_left(time.monotonic()) < batch.lease_s * 2 / 3 and not self._db.extend(batch):
            raise LeaseLost()
