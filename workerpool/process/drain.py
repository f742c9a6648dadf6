"""How `run --drain` ends: 0 once everything is synced, EXIT_ROWS_FAILED when rows went to failed during
the run (they wait for `retry-failed`, and a script or CI job must not take the drain for a success)."""

from __future__ import annotations

import datetime
import logging

import psycopg

from workerpool.config import Settings
from workerpool.db.connection import DatabaseUnavailable, connect, one_row
from workerpool.db.queries import Q

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ROWS_FAILED = 5


def database_now(settings: Settings) -> datetime.datetime:
    """The database's time when the drain starts (rows' updated_at are on its clock), or this host's
    if the database is away."""
    try:
        with connect(settings.database_url, purpose="drain", timeout=10) as conn:
            now: datetime.datetime = one_row(conn.execute(Q.database_now))[0]
            return now
    except (psycopg.Error, DatabaseUnavailable):
        return datetime.datetime.now(datetime.UTC)


def exit_code(settings: Settings, started_at: datetime.datetime | None) -> int:
    """EXIT_ROWS_FAILED, with one line saying how many, when rows went to failed since `started_at`;
    else EXIT_OK."""
    try:
        with connect(settings.database_url, purpose="drain", timeout=10) as conn:
            failed = one_row(conn.execute(Q.failed_since, (started_at or database_now(settings),)))[0]
    except (psycopg.Error, DatabaseUnavailable) as exc:
        log.error("cannot count the rows failed during the drain", extra={"action": "drain_unknown", "error": str(exc)})
        return EXIT_ROWS_FAILED
    if not failed:
        return EXIT_OK
    log.error(
        f"drained, but {failed} row(s) failed during the run: see their last_error "
        "(SELECT * FROM algolia_sync_queue WHERE status = 'failed'), then `workerpool retry-failed`",
        extra={"action": "drain_rows_failed", "failed": failed},
    )
    return EXIT_ROWS_FAILED
