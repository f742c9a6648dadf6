"""A worker's outcomes not yet written: kept, in claim order, while the database is away.

Nothing is lost, and a worker never claims more while one is unwritten. Each outcome is written by
`DatabaseService.settle_batch`, which never writes a part twice when it is called again.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from workerpool.api.database import DatabaseService
from workerpool.api.results import BatchResult


class PendingAcks:
    """Outcomes not yet written, oldest first."""

    def __init__(self, database_trouble: Callable[[BaseException], None]) -> None:
        self._database_trouble = database_trouble
        self._pending: list[BatchResult] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, result: BatchResult) -> None:
        self._pending.append(result)

    def flush(self, db: DatabaseService | None) -> None:
        """Write what is pending, in order; on a database error keep the rest for the next call."""
        while self._pending and db is not None:
            try:
                db.settle_batch(self._pending[0])
            except psycopg.Error as exc:
                self._database_trouble(exc)
                return
            self._pending.pop(0)
