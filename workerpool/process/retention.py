"""Log retention run by the pool itself: no cron, no `cleanup` call.

Every worker owns a `Retention`; whichever finds it due first tries to delete the log's records
(`algolia_sync_log`) older than LOG_RETENTION_DAYS. The log holds one row per acknowledgement or release
call (`algolia_sync_log_batches`), so whole calls go. Each batch is one short transaction: take a
transaction-level advisory lock with `pg_try_advisory_xact_lock` (shared by every worker on every host,
so two never delete at once and never wait on each other's row locks), delete up to BATCH_CALLS of the
oldest expired calls through the `synced_at` index, commit. A worker that finds the lock taken leaves
the pass to its holder until its next period. A pass is time-boxed per call, so a worker catching up on
a large backlog still claims between its batches; vacuum reclaims the deleted rows as it does the queue's.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from workerpool.db.connection import one_row
from workerpool.db.queries import Q

log = logging.getLogger(__name__)

# Any 64-bit number unique to this purpose; chosen once, never change it (migrate.py uses ..._01).
RETENTION_LOCK_ID = 0x776F726B6572_02
# Calls per transaction: up to ~200,000 records (a busy pool's calls hold ~1,000), ~4,000 TOAST chunks.
BATCH_CALLS = 200
PERIOD_S = 300.0  # between passes, or a tenth of the retention when that is shorter (not under 5 s)
FIRST_PASS_S = (2.0, 10.0)  # the first pass after start, spread so that workers do not all try at once
STEP_BUDGET_S = 1.0  # a pass gives the claim loop back after about this long; the next call continues


@dataclass
class Retention:
    """When and how far one worker prunes the log. `days` 0 keeps the log forever; `deleted` counts
    the records (log rows) the pass under way deleted."""

    days: float
    batch_calls: int = BATCH_CALLS
    next_at: float = field(default=0.0)
    cutoff: datetime | None = None  # set while a pass is under way
    deleted: int = 0

    def __post_init__(self) -> None:
        if not self.next_at:
            self.next_at = time.monotonic() + random.uniform(*FIRST_PASS_S)

    @property
    def period_s(self) -> float:
        return min(PERIOD_S, max(5.0, self.days * 86_400 / 10))

    def due(self, now: float) -> bool:
        return self.days > 0 and now >= self.next_at

    def step(self, conn: psycopg.Connection, now: float) -> int:
        """Delete expired calls for up to STEP_BUDGET_S; returns how many records (log rows) they held.
        `conn` is in autocommit mode."""
        if self.cutoff is None:
            self.cutoff = datetime.now(UTC) - timedelta(days=self.days)
            self.deleted = 0
        self.next_at = now + self.period_s  # also when a statement fails: never retry in a tight loop
        deleted = 0
        deadline = time.monotonic() + STEP_BUDGET_S
        while True:
            with conn.transaction():
                if not one_row(conn.execute(Q.retention_lock, (RETENTION_LOCK_ID,)))[0]:
                    self.cutoff = None  # another worker is pruning; its pass covers this one
                    return deleted
                row = one_row(conn.execute(Q.prune_log, (self.cutoff, self.batch_calls)))
                calls, records = int(row[0]), int(row[1])
            deleted += records
            self.deleted += records
            if calls < self.batch_calls:
                if self.deleted:
                    log.info(
                        "old log rows deleted",
                        extra={"action": "log_pruned", "rows": self.deleted, "older_than": self.cutoff.isoformat()},
                    )
                self.cutoff = None
                return deleted
            if time.monotonic() >= deadline:
                self.next_at = now  # more to delete: continue at the next step
                return deleted
