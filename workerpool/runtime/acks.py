"""Writing what happened to a claim's rows: acknowledged, failed, retried, or given back unspent.

Each part of an outcome is cleared once written, so a retry after a failure halfway never writes a
part twice (the worker keeps outcomes while the database is away: `process/pending.py`).
"""

from __future__ import annotations

import psycopg

from workerpool.config import Settings
from workerpool.runtime import queue
from workerpool.runtime.queue import Batch
from workerpool.runtime.shaping import Outcome


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
        elif part == "retry":
            held = queue.retry(conn, token, outcome.retry, s.max_retries, s.retry_backoff, s.retry_backoff_max)
        else:
            held = queue.give_back(conn, token, outcome.unsent, s.max_retries)
        setattr(outcome, part, [])
        if held < len(rows):
            lost.append((part, len(rows), held))
    return lost
