"""Writing what happened to a claim's rows: acknowledged, failed, retried, or given back unspent.

Outcomes are written in claim order and kept while the database is away, so nothing is lost and a
worker never claims more while one is unwritten. Each part of an outcome is cleared once written, so
a retry after a failure halfway never writes a part twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg
from psycopg_pool import ConnectionPool

from workerpool.config import Settings
from workerpool.runtime import queue
from workerpool.runtime.queue import Claim
from workerpool.runtime.shaping import Outcome

log = logging.getLogger(__name__)


def write_outcome(
    conn: psycopg.Connection, claim: Claim, outcome: Outcome, settings: Settings
) -> list[tuple[str, int, int]]:
    """Write one claim's outcome; returns the parts of it this claim's token no longer fully held,
    as (part, rows, rows held): another worker took them over after the lease expired."""
    s, token = settings, claim.token
    lost = []
    for part, rows in (
        ("done", outcome.done),
        ("failed", outcome.failed),
        ("retry", outcome.retry),
        ("unsent", outcome.unsent),
    ):
        if not rows:
            continue
        if part == "done":
            held = queue.ack(conn, token, outcome.done)
        elif part == "failed":
            held = queue.fail(conn, token, outcome.failed, s.max_retries)
        elif part == "retry":
            held = queue.retry(conn, token, outcome.retry, s.max_retries, s.retry_backoff, s.retry_backoff_max)
        else:
            held = queue.give_back(conn, token, outcome.unsent, s.max_retries)
        setattr(outcome, part, [])
        if held < len(rows):
            lost.append((part, len(rows), held))
    return lost


class PendingAcks:
    """Outcomes not yet written, oldest first."""

    def __init__(self, settings: Settings, number: int, database_trouble: Callable[[BaseException], None]) -> None:
        self.settings = settings
        self.number = number
        self._database_trouble = database_trouble
        self._pending: list[tuple[Claim, Outcome]] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, claim: Claim, outcome: Outcome) -> None:
        self._pending.append((claim, outcome))

    def flush(self, pool: ConnectionPool | None) -> None:
        """Write what is pending, in order; on a database error keep the rest for the next call."""
        while self._pending and pool is not None:
            claim, outcome = self._pending[0]
            try:
                with pool.connection() as conn:
                    lost = write_outcome(conn, claim, outcome, self.settings)
            except psycopg.Error as exc:
                self._database_trouble(exc)
                return
            for part, expected, held in lost:
                log.warning(
                    "lease lost",
                    extra={
                        "action": "lease_lost",
                        "worker": self.number,
                        "token": str(claim.token),
                        "part": part,
                        "expected": expected,
                        "held": held,
                    },
                )
            self._pending.pop(0)
