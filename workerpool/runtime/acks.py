"""Writing what happened to a claim's rows: acknowledged, failed, retried, or given back unspent.

Each part of an outcome is cleared once written, so a retry after a failure halfway never writes a
part twice (the worker keeps outcomes while the database is away: `process/pending.py`).
"""

from __future__ import annotations

import logging

import psycopg

from workerpool.config import Settings
from workerpool.observability import metrics
from workerpool.runtime import queue
from workerpool.runtime.model import Batch, Outcome, SyncItem

log = logging.getLogger(__name__)


def write_outcome(
    conn: psycopg.Connection, claim: Batch, outcome: Outcome, settings: Settings
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
            for row, error in outcome.failed:
                _failed(row, "rejected" if error.startswith("algolia ") else "error", error)
        elif part == "retry":
            held = queue.retry(conn, token, outcome.retry, s.max_retries, s.retry_backoff, s.retry_backoff_max)
            for row, error in outcome.retry:
                if row.attempts >= s.max_retries:
                    _failed(row, "attempts", f"{row.attempts} attempts (MAX_RETRIES={s.max_retries}), last: {error}")
        else:
            held = queue.give_back(
                conn, token, outcome.unsent, s.max_retries, outcome.unsent_error, outcome.unsent_delay_ms
            )
        setattr(outcome, part, [])
        if held < len(rows):
            lost.append((part, len(rows), held))
    return lost


def _failed(row: SyncItem, reason: str, error: str) -> None:
    """One log line and a count per row that goes to failed for good: it waits for `retry-failed`."""
    metrics.record_rows_failed(reason, 1)
    log.warning(
        "row failed",
        extra={
            "action": "row_failed",
            "table": row.table_name,
            "record_id": row.record_id,
            "queue_id": row.id,
            "attempts": row.attempts,
            "reason": reason,
            "error": error,
        },
    )
