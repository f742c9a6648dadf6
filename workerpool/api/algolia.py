"""`AlgoliaService`: claimed rows to records to Algolia, with the workers' Shaper and Sender."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg

from workerpool.api.database import DatabaseService, SyncItem, SyncResult
from workerpool.capture.model import Watched, load_watched
from workerpool.config import Settings
from workerpool.logs import one_line
from workerpool.runtime import records
from workerpool.runtime.algolia import AlgoliaError, Sender
from workerpool.runtime.queue import QueueRow
from workerpool.runtime.shaping import Current, Item, Outcome, Shaper
from workerpool.runtime.worker import CONFIG_REFRESH_S

# SQLSTATE classes about the relation (undefined table or column, privilege, syntax; feature not
# supported): the table's rows retry. Classes about the server or the moment: the batch is given back.
TABLE_ERROR_CLASSES = ("42", "0A")
TRANSIENT_ERROR_CLASSES = ("08", "40", "53", "57", "58")


class AlgoliaService:
    """Reads the current rows of claimed items, builds their records and sends them, as a worker does.

    Records are built by the workers' `Shaper` (source views, `--attributes`, transforms, `_version`
    guards, skip-unchanged through the last-sent hashes) and sent by their `Sender` (pre-serialized
    multipleBatch requests over the algoliasearch transport, to ALGOLIA_HOSTS when set). A row that
    cannot be read or built, or a record Algolia rejects, fails alone; the rest of the batch goes on.
    Index names get ALGOLIA_INDEX_PREFIX. Before each request the leases of the items' claims are
    extended when they have aged past a third; items whose lease is gone come back as `lost`.

    Examples:
        >>> from workerpool import AlgoliaService, DatabaseService, Settings
        >>> settings = Settings.from_env()
        >>> db = DatabaseService(settings.database_url, settings)
        >>> algolia = AlgoliaService(db)
        >>> results = algolia.sync_batch(db.get_pending_syncs(100))
        >>> db.settle(results)
    """

    def __init__(self, database: DatabaseService, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else database.settings
        self._db = database
        self._shaper = Shaper(self.settings)
        self._sender: Sender | None = None
        self._watched: dict[str, Watched] = {}
        self._watched_at = 0.0

    def close(self) -> None:
        """Close the HTTP transport (the DatabaseService is closed separately)."""
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def __enter__(self) -> AlgoliaService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        rows = [QueueRow(*item) for item in sync_items]
        outcome = Outcome()
        lost: list[QueueRow] = []
        try:
            items = self._prepare(rows, outcome)
        except psycopg.Error as exc:
            outcome = Outcome(retry=[(r, f"database error: {one_line(exc)}") for r in rows])
            items = []
        if items:
            send_items(self._sender_for(), items, outcome, self.settings.max_request_bytes, self._lease_check(lost))
        return _results(rows, outcome, lost)

    # ---- internals -------------------------------------------------------------------------

    def _sender_for(self) -> Sender:
        if self._sender is None:
            self.settings.require_algolia()
            self._sender = Sender(self.settings)
        return self._sender

    def _config_for(self, conn: psycopg.Connection[Any], table: str) -> Watched | None:
        now = time.monotonic()
        if table not in self._watched or now - self._watched_at > CONFIG_REFRESH_S:
            self._watched = load_watched(conn)
            self._watched_at = now
        return self._watched.get(table)

    def _prepare(self, rows: list[QueueRow], outcome: Outcome) -> list[Item]:
        """The items of `rows`, one read per table (see `read_current`)."""
        by_table: dict[str, list[QueueRow]] = {}
        for row in rows:
            by_table.setdefault(row.table_name, []).append(row)
        items: list[Item] = []
        with self._db._reading() as conn:
            for table, part in by_table.items():
                watched = self._config_for(conn, table)
                if watched is None:
                    outcome.failed.extend(
                        (r, f"table {table} is not watched (no enabled row in algolia_index_config)") for r in part
                    )
                    continue
                index = self.settings.algolia_index_prefix + watched.index_name
                for current, read in read_current(self._shaper, conn, watched, index, part, outcome):
                    for row in read:
                        item = self._shaper.item(watched, index, row, current, outcome)
                        if item is not None:
                            items.append(item)
        return items

    def _lease_check(self, lost: list[QueueRow]) -> Callable[[list[Item]], list[Item]]:
        """Before each request: the chunk's items whose claims still hold (extended when ageing);
        the others are added to `lost`."""
        gone: set[uuid.UUID] = set()

        def check(chunk: list[Item]) -> list[Item]:
            keep = []
            for item in chunk:
                try:
                    token = self._db._held(item.row.id)[1]
                except ValueError:
                    token = None
                if token is None or token in gone or not self._db._extend(token):
                    if token is not None:
                        gone.add(token)
                    lost.append(item.row)
                else:
                    keep.append(item)
            return keep

        return check


def read_current(
    shaper: Shaper, conn: psycopg.Connection[Any], watched: Watched, index: str, rows: list[QueueRow], outcome: Outcome
) -> Iterator[tuple[Current, list[QueueRow]]]:
    """The current rows of `rows`' keys, in one query when it succeeds.

    When it fails for something in the rows (a value that cannot be read, a key that no longer
    casts, an error a source view raises for one row), the keys are halved until each offending key
    fails alone. An error about the table itself retries all of its rows; a connection or transient
    server error propagates (the caller gives the whole batch back).
    """
    try:
        yield shaper.load_rows(conn, watched, index, [r.record_id for r in rows]), rows
        return
    except (psycopg.OperationalError, psycopg.InterfaceError):
        raise
    except psycopg.Error as exc:
        if exc.sqlstate and exc.sqlstate[:2] in TRANSIENT_ERROR_CLASSES:
            raise
        if exc.sqlstate and exc.sqlstate[:2] in TABLE_ERROR_CLASSES:
            reason = f"cannot read {watched.reads_from} for table {watched.table_name}: {one_line(exc)}"
            outcome.retry.extend((r, reason) for r in rows)
            return
        error: BaseException = exc
    except Exception as exc:  # a loader or value error in psycopg: one row's data
        error = exc
    if len(rows) == 1:
        reason = (
            f"cannot read row {rows[0].record_id} of {watched.reads_from}: {type(error).__name__}: {one_line(error)}"
        )
        outcome.failed.append((rows[0], reason))
        return
    middle = len(rows) // 2
    yield from read_current(shaper, conn, watched, index, rows[:middle], outcome)
    yield from read_current(shaper, conn, watched, index, rows[middle:], outcome)


def send_items(
    sender: Sender,
    items: list[Item],
    outcome: Outcome,
    max_request_bytes: int,
    lease_check: Callable[[list[Item]], list[Item]],
) -> None:
    """Send built items in requests of at most `max_request_bytes`, recording each item in `outcome`.

    Skipped (unchanged) items are done without a request. A permanent 4xx splits its request until
    only the offending records fail; throttling and refused credentials leave the rest `unsent`
    (no attempt spent); any other error retries the rest.
    """
    outcome.done.extend(i for i in items if i.action == "skip")
    chunks = list(_chunks([i for i in items if i.action != "skip"], max_request_bytes))
    for n, chunk in enumerate(chunks):
        try:
            _send_chunk(sender, lease_check(chunk), outcome)
        except AlgoliaError as exc:
            rest = [i.row for i in chunk + [i for c in chunks[n + 1 :] for i in c]]
            settled = {i.row.id for i in outcome.done} | {r.id for r, _ in outcome.failed}
            rest = [r for r in rest if r.id not in settled]
            message = f"algolia {exc.status}: {one_line(exc.message)}" if exc.status else one_line(exc.message)
            if exc.throttled or exc.auth:
                outcome.unsent.extend(rest)  # not the records' fault: no attempt is spent
            else:
                outcome.retry.extend((r, message) for r in rest)
            return


def _chunks(items: list[Item], limit: int) -> Iterator[list[Item]]:
    """Split only where the request-size limit forces it."""
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


def _send_chunk(sender: Sender, chunk: list[Item], outcome: Outcome) -> None:
    """One request; a permanent 4xx (not 401/403/429) splits it until only the offending records fail."""
    if not chunk:
        return
    try:
        sender.send_batch(records.batch_body(i.body for i in chunk))
    except AlgoliaError as exc:
        if exc.throttled or exc.auth or not exc.permanent:
            raise
        if len(chunk) == 1:
            outcome.failed.append((chunk[0].row, f"algolia {exc.status}: {one_line(exc.message)}"))
            return
        middle = len(chunk) // 2
        _send_chunk(sender, chunk[:middle], outcome)
        _send_chunk(sender, chunk[middle:], outcome)
        return
    outcome.done.extend(chunk)


def _results(rows: list[QueueRow], outcome: Outcome, lost: list[QueueRow]) -> list[SyncResult]:
    """One SyncResult per row, in the rows' order."""
    by_id: dict[int, SyncResult] = {}
    for item in outcome.done:
        r = item.row
        by_id[r.id] = SyncResult(r.id, r.table_name, r.record_id, "completed", item.action, _item=item)
    for r, error in outcome.failed:
        by_id[r.id] = SyncResult(r.id, r.table_name, r.record_id, "failed", error=error)
    for r, error in outcome.retry:
        by_id[r.id] = SyncResult(r.id, r.table_name, r.record_id, "retry", error=error)
    for r in outcome.unsent:
        by_id[r.id] = SyncResult(r.id, r.table_name, r.record_id, "unsent", error="released unsent")
    for r in lost:
        by_id[r.id] = SyncResult(r.id, r.table_name, r.record_id, "lost", error="the claim's lease expired")
    return [by_id[r.id] for r in rows]
