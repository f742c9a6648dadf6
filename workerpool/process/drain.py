"""What `run --drain` ends with: how many rows went to failed during the run (they wait for
`retry-failed`, and a script or CI job must not take the drain for a success), on the database's clock."""

from __future__ import annotations

import datetime
import logging

import psycopg

from workerpool.config import Settings
from workerpool.db.connection import DatabaseUnavailable, connect, one_row
from workerpool.db.queries import Q

log = logging.getLogger(__name__)


def database_now(settings: Settings) -> datetime.datetime:
    """The database's time when the drain starts (rows' updated_at are on its clock), or this host's
    if the database is away."""
    try:
        with connect(settings.database_url, purpose="drain", timeout=10) as conn:
            now: datetime.datetime = one_row(conn.execute(Q.database_now))[0]
            return now
    except (psycopg.Error, DatabaseUnavailable):
        return datetime.datetime.now(datetime.UTC)


def rows_failed(settings: Settings, since: datetime.datetime) -> int | None:
    """How many rows went to failed since `since` (one line says so when any did), or None when the
    database cannot tell."""
    try:
        with connect(settings.database_url, purpose="drain", timeout=10) as conn:
            failed: int = one_row(conn.execute(Q.failed_since, (since,)))[0]
    except (psycopg.Error, DatabaseUnavailable) as exc:
        log.error("cannot count the rows failed during the drain", extra={"action": "drain_unknown", "error": str(exc)})
        return None
    if failed:
        log.error(
            f"drained, but {failed} row(s) failed during the run: see their last_error "
            "(SELECT * FROM algolia_sync_queue WHERE status = 'failed'), then `workerpool retry-failed`",
            extra={"action": "drain_rows_failed", "failed": failed},
        )
    return failed
