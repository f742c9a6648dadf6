"""What a sync did: per batch (`BatchResult`, what the workers settle) and per item (`SyncResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import psycopg

from workerpool.runtime.model import Batch, Item, Outcome, SyncItem

Status = Literal["completed", "retry", "failed", "unsent", "lost"]


@dataclass
class SyncResult:
    """What happened to one `SyncItem` in `AlgoliaService.sync_batch`; hand it back with
    `DatabaseService.settle` (or `mark_completed` / `mark_failed`).

    `status` is one of: `completed` (in the index, or unchanged and skipped), `retry` (a transient
    error: retried with backoff), `failed` (this record can never be sent as it is: failed for good),
    `unsent` (not sent for reasons that are not the record's fault, such as throttling or refused
    credentials: given back without spending an attempt), `lost` (the claim's lease expired: the row
    is no longer this caller's, so nothing is written).

    Examples:
        >>> results = algolia.sync_batch(items)
        >>> [r.error for r in results if r.status == "failed"]
        []
    """

    queue_id: int
    table_name: str
    object_id: str
    status: Status
    action: str | None = None  # partialUpdateObject, updateObject, deleteObject or skip, when completed
    error: str | None = None
    _item: Item | None = field(default=None, repr=False, compare=False)


@dataclass(eq=False)
class BatchResult:
    """What happened to the rows of one `Batch` in `AlgoliaService.sync`: the unit the workers settle,
    with `DatabaseService.settle_batch`.

    Every row ends in one part of `outcome`: sent or skipped as unchanged (`done`), failed for good
    (`failed`), to retry with backoff (`retry`), or given back without spending an attempt (`unsent`).
    `lost` says the claim's lease expired while sending: the rows are no longer this caller's and
    `settle_batch` writes nothing. `database_error` is the error that stopped the rows being read
    (they all retry); a loop may back off before its next claim. `outcome` holds the workers' own
    detail (its item type is private and may change): read a result through `counts` and `results`.

    Examples:
        >>> result = algolia.sync(db.claim(500))
        >>> result.counts()
        {'upserts': 498, 'deletes': 2, 'skipped': 0, 'failed': 0, 'retried': 0, 'released': 0}
        >>> db.settle_batch(result)
        500
    """

    batch: Batch
    lost: bool = False
    database_error: psycopg.Error | None = None
    outcome: Outcome = field(default_factory=Outcome, repr=False)
    # The hand-over between the two services (`api/seam.py`): the records `AlgoliaService.read` built
    # until `send` sends them, and what `DatabaseService.settle_batch` has yet to write after a
    # settle that a database error stopped halfway.
    built: list[Item] | None = field(default=None, repr=False)
    unwritten: Outcome | None = field(default=None, repr=False)

    def counts(self) -> dict[str, int]:
        """How many rows ended how, by the names of the workers' `batch_synced` log line.

        Examples:
            >>> algolia.sync(batch).counts()["failed"]
            0
        """
        return self.outcome.counts()

    def results(self) -> list[SyncResult]:
        """One `SyncResult` per row, in the batch's order (every row `lost` when the lease was).

        Examples:
            >>> [r.object_id for r in algolia.sync(batch).results() if r.status == "failed"]
            []
        """
        if self.lost:
            return [lost(r) for r in self.batch.rows]
        by_id = item_results(self.outcome)
        return [by_id[r.id] for r in self.batch.rows if r.id in by_id]


def lost(r: SyncItem) -> SyncResult:
    return SyncResult(r.id, r.table_name, r.record_id, "lost", error="the claim's lease expired")


def item_results(outcome: Outcome) -> dict[int, SyncResult]:
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
        by_id[r.id] = SyncResult(r.id, r.table_name, r.record_id, "unsent", error=outcome.unsent_error)
    return by_id


@dataclass(frozen=True, slots=True)
class BareAck:
    """An acknowledgement with no record detail (`mark_completed` without a `SyncResult`): read by
    `queue.ack` as a `runtime.model.Acked`, it logs no action or index and keeps no hash."""

    row: SyncItem
    action: str | None
    index: str | None
    hash: bytes | None
    shape: bytes | None
    stored: bool | None = None  # not known: the hash, if any, is upserted
