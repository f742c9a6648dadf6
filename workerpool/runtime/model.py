"""The core model the pipeline shares: what a claim holds (`SyncItem`, `Batch`), what the worker
does with each row (`Action`, `Item`), how a claim ends (`Outcome`), and what an acknowledgement reads
of each item (`Acked`).

The queue (`queue.py`) claims and settles these, the shaper (`shaping.py`) makes the items, the
dispatcher (`dispatch.py`) sends them, `acks.py` and the public API settle them, and the metrics
label them by `LABELS`. An Algolia action workerpool sends starts here, as an `Action` member
(the batch body it is written into is `records.py`'s).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol


class Action(StrEnum):
    """What the worker does with one row: Algolia's batch action name, or `skip` (unchanged since it
    was last sent: nothing is sent). A str, so it goes into SQL and JSON as its value."""

    PARTIAL_UPDATE = "partialUpdateObject"  # a version-guarded partial update (also the first write)
    UPDATE = "updateObject"  # replaced whole (its attributes changed, or a reindex)
    DELETE = "deleteObject"  # the row is gone, or the transform dropped it
    SKIP = "skip"

    @property
    def label(self) -> str:
        """The `action` label of the synced-records metric: upsert, delete or unchanged."""
        return LABELS[self]


# The members as module names too, for the per-record paths: reading an enum class's attribute costs
# ~80 ns through its metaclass, a module global a dict read (timeit, Python 3.11).
PARTIAL_UPDATE, UPDATE, DELETE, SKIP = Action.PARTIAL_UPDATE, Action.UPDATE, Action.DELETE, Action.SKIP
# The actions that write a record's content (whose hash is then kept), as a set: an acknowledgement's
# action may arrive as a plain str (`DatabaseService.mark_completed`), which a set of members matches.
WRITES = frozenset({PARTIAL_UPDATE, UPDATE})
LABELS = {PARTIAL_UPDATE: "upsert", UPDATE: "upsert", DELETE: "delete", SKIP: "unchanged"}


class SyncItem(NamedTuple):
    """One claimed queue row: a key of a watched table whose current state must reach Algolia.

    `record_id` is the key as text, which is also the record's objectID. `attempts` counts this claim.
    (A NamedTuple: a claim makes thousands, and a frozen dataclass costs a Python-level __setattr__
    per field.)

    Examples:
        >>> for item in db.get_pending_syncs(100):
        ...     print(item.id, item.table_name, item.record_id, item.operation)
    """

    id: int
    table_name: str
    record_id: str
    operation: str
    attempts: int
    created_at: datetime


@dataclass
class Batch:
    """One claim: due queue rows held under one token until its lease runs out.

    `DatabaseService.claim` makes it; `AlgoliaService.sync` sends it; `DatabaseService.settle_batch`
    writes what happened to its rows; `DatabaseService.extend` pushes its lease forward. An empty
    batch (nothing was due) is false. `rows` are `SyncItem`s; `spilled` is how many queue rows the
    inbox spill before the claim made or merged (None when the claim did not look at the inbox).

    Examples:
        >>> batch = db.claim(500)
        >>> if batch:
        ...     db.settle_batch(algolia.sync(batch))
    """

    token: uuid.UUID
    rows: list[SyncItem]
    claimed_at: float  # time.monotonic() when the claim committed
    lease_s: float
    extended_at: float = field(default=0.0)
    spilled: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def lease_left(self, now: float) -> float:
        """Seconds of lease left at `now` (a `time.monotonic()` reading); negative once it is gone."""
        return max(self.extended_at, self.claimed_at) + self.lease_s - now


@dataclass(slots=True)
class Item:
    """One queue row on its way to Algolia."""

    row: SyncItem
    index: str
    action: Action
    body: bytes
    hash: bytes | None = None
    shape: bytes | None = None
    stored: bool | None = None  # whether the key had a hash when its row was read


@dataclass
class Outcome:
    """What happened to a claim's rows; each row ends in exactly one list."""

    done: list[Item] = field(default_factory=list)
    failed: list[tuple[SyncItem, str]] = field(default_factory=list)  # permanent
    retry: list[tuple[SyncItem, str]] = field(default_factory=list)
    unsent: list[SyncItem] = field(default_factory=list)  # given back without spending an attempt
    unsent_error: str = "released unsent"  # why: their last_error
    unsent_delay_ms: int = 0  # due again after this long (an Algolia outage's backoff)
    outage: bool = False  # the unsent rows wait for Algolia to answer again (counted as retried)

    def unsettled(self, rows: Iterable[SyncItem]) -> list[SyncItem]:
        """The rows of `rows` that no part of the outcome holds yet (a send that stopped halfway)."""
        settled = {i.row.id for i in self.done} | {r.id for r, _ in self.failed}
        settled |= {r.id for r, _ in self.retry} | {r.id for r in self.unsent}
        return [r for r in rows if r.id not in settled]

    def retried_rows(self) -> list[SyncItem]:
        """The rows given back for another try: retries, and the rows an Algolia outage sent back."""
        return [r for r, _ in self.retry] + (self.unsent if self.outage else [])

    def counts(self) -> dict[str, int]:
        """How many rows ended how, by the names the worker's `batch_synced` log line gives them."""
        return {
            "upserts": sum(1 for i in self.done if i.action in WRITES),
            "deletes": sum(1 for i in self.done if i.action == DELETE),
            "skipped": sum(1 for i in self.done if i.action == SKIP),
            "failed": len(self.failed),
            "retried": len(self.retry),
            "released": len(self.unsent),
        }


class Acked(Protocol):
    """What `ack` reads of an item the worker sent or skipped (an `Item`, or the public API's)."""

    @property
    def row(self) -> SyncItem: ...
    @property
    def action(self) -> str | None: ...
    @property
    def index(self) -> str | None: ...
    @property
    def hash(self) -> bytes | None: ...
    @property
    def shape(self) -> bytes | None: ...
    @property
    def stored(self) -> bool | None: ...
