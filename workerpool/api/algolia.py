"""`AlgoliaService`: claimed rows to records to Algolia, with the workers' Reader and Dispatcher."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from workerpool.api.database import DatabaseService, SyncItem, SyncResult
from workerpool.config import Settings
from workerpool.logs import one_line
from workerpool.runtime.algolia import Sender
from workerpool.runtime.dispatch import Dispatcher, LeaseLost
from workerpool.runtime.queue import Claim, QueueRow
from workerpool.runtime.reading import Reader
from workerpool.runtime.shaping import Outcome


class AlgoliaService:
    """Reads the current rows of claimed items, builds their records and sends them, as a worker does.

    Records are read and built by the workers' `Reader` and `Shaper` (source views, `--attributes`,
    transforms, `_version` guards, skip-unchanged through the last-sent hashes) and sent by their
    `Dispatcher` and `Sender` (pre-serialized multipleBatch requests over the algoliasearch transport,
    to ALGOLIA_HOSTS when set). A row that
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
        self._reader = Reader(self.settings)
        self._dispatcher: Dispatcher | None = None

    def close(self) -> None:
        """Close the HTTP transport (the DatabaseService is closed separately)."""
        if self._dispatcher is not None:
            self._dispatcher.sender.close()
            self._dispatcher = None

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
        results: dict[int, SyncResult] = {}
        for claim, part in self._db._claims_of(rows):
            outcome = Outcome()
            try:
                with self._db._reading() as conn:
                    items = self._reader.items(conn, part, outcome)
            except psycopg.Error as exc:  # the connection or the server, not the rows: all of them retry
                outcome = Outcome(retry=[(r, f"database error: {one_line(exc)}") for r in part])
                items = []
            try:
                if items:
                    self._dispatcher_for().send(claim, items, outcome)
            except LeaseLost:
                for r in part:
                    results[r.id] = SyncResult(
                        r.id, r.table_name, r.record_id, "lost", error="the claim's lease expired"
                    )
                continue
            results.update(_results(outcome))
        return [results[r.id] for r in rows]

    # ---- internals -------------------------------------------------------------------------

    def _dispatcher_for(self) -> Dispatcher:
        """The workers' sending policy; throttling and refused credentials return the rest `unsent`
        at once instead of sleeping: the caller's loop decides when to try again."""
        if self._dispatcher is None:
            self.settings.require_algolia()
            self._dispatcher = Dispatcher(
                self.settings, 0, Sender(self.settings), self._ensure_lease, lambda: False, lambda seconds: None
            )
        return self._dispatcher

    def _ensure_lease(self, claim: Claim) -> None:
        """Before each request: refuse to send under a lease that is gone; extend one that is ageing."""
        if not self._db._extend(claim.token):
            raise LeaseLost()


def _results(outcome: Outcome) -> dict[int, SyncResult]:
    """One SyncResult per row of an outcome, by queue id."""
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
    return by_id
