"""A worker's watchdog for transforms that will not return.

A transform runs on the worker's main thread under TRANSFORM_TIMEOUT (SIGALRM, raised again every
second). One that catches every interruption never returns, and the claim it belongs to would wait
for its lease, be claimed again and stop the next worker too. This side thread sees a record that
has been building for TRANSFORM_TIMEOUT + STUCK_GRACE_S, fails that row alone, gives the rest of its
claim back without spending an attempt, and exits the process: the supervisor starts a new worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from psycopg_pool import ConnectionPool

from workerpool.config import Settings
from workerpool.exit_codes import WORKER_EXIT_CRASH
from workerpool.logs import one_line
from workerpool.runtime import queue
from workerpool.runtime.model import Batch, SyncItem

log = logging.getLogger(__name__)

STUCK_GRACE_S = 5.0

# What the main thread is doing: the row being built and since when, and the claim it belongs to.
Building = Callable[[], tuple[tuple[SyncItem, float] | None, Batch | None]]


def start_watchdog(settings: Settings, number: int, pool: ConnectionPool, building: Building) -> threading.Thread:
    """Start the watchdog thread of worker `number` (a daemon: it ends with the process)."""
    thread = threading.Thread(
        target=_watch, args=(settings, number, pool, building), name=f"watchdog-{number}", daemon=True
    )
    thread.start()
    return thread


def _watch(settings: Settings, number: int, pool: ConnectionPool, building: Building) -> None:
    limit = settings.transform_timeout / 1000.0 + STUCK_GRACE_S
    while True:
        time.sleep(1.0)
        current, batch = building()
        if current is None or batch is None or time.monotonic() - current[1] < limit:
            continue
        row = current[0]
        error = (
            f"transform did not return within TRANSFORM_TIMEOUT={settings.transform_timeout} ms and ignored "
            "being interrupted; the worker was restarted"
        )
        others = [r for r in batch.rows if r.id != row.id]
        try:
            with pool.connection(timeout=5) as conn:
                queue.fail(conn, batch.token, [(row, error)], settings.max_retries)
                queue.give_back(conn, batch.token, others, settings.max_retries)
        except Exception as exc:  # the database is away: the rows return by lease instead
            error += f" (not written: {one_line(exc)})"
        log.error(
            "a transform will not return; its row failed, the worker restarts",
            extra={
                "action": "transform_stuck",
                "worker": number,
                "table": row.table_name,
                "record_id": row.record_id,
                "given_back": len(others),
                "error": error,
            },
        )
        os._exit(WORKER_EXIT_CRASH)  # the supervisor restarts it with backoff
