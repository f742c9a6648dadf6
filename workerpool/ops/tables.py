"""Tables as commands name them, what the queue holds for them, and the commands on that: unwatch,
retry the failed rows, clean the log up.

Every command that takes a table accepts it as `watch` does (`My Table`, `public.products`, `"X"`)
and works on the canonical name that `watch` stored in `algolia_index_config.table_name`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from workerpool.capture.model import WatchError, find_watched, resolve_relation
from workerpool.config import ConfigError
from workerpool.db.connection import one_row
from workerpool.db.queries import Q


def queue_table_name(conn: psycopg.Connection, name: str) -> str:
    """The queue's table_name for `name`: a watched table's canonical name, or that of a table no longer
    watched (or dropped) whose rows the queue still holds. WatchError when it is neither."""
    try:
        return find_watched(conn, name).table_name
    except WatchError as not_watched:
        candidates = [name]
        try:
            candidates.append(resolve_relation(conn, name)[1])
        except WatchError:
            pass
        row = conn.execute(Q.tables_with_queue_rows, (candidates,)).fetchone()
        if row is None:
            raise not_watched from None
        table_name: str = row[0]
        return table_name


@dataclass(frozen=True)
class Backlog:
    """A table's unsynced keys: pending (inbox, queue, or held by a worker) and failed for good."""

    pending: int
    failed: int


def backlog(conn: psycopg.Connection, table_name: str) -> Backlog:
    """Distinct keys of `table_name` not yet in the index: a key both in the inbox and the queue counts once."""
    pending, failed = one_row(conn.execute(Q.backlog, {"t": table_name}))
    return Backlog(pending, failed)


def unwatch_table(conn: psycopg.Connection, table: str, drop_pending: bool) -> tuple[str, Backlog | None]:
    """`workerpool unwatch`, in one transaction: the registration's name and what it left in the queue.

    Writers to the table finish first and wait for the commit (a lock), so the backlog counted is what
    is dropped; refused (ConfigError, one line) while changes are pending, unless `drop_pending`."""
    from psycopg import sql

    from workerpool.capture.triggers import unwatch

    with conn.transaction():
        name: str | None
        relation: str | None
        try:
            watched = find_watched(conn, table)
            name, relation = watched.table_name, watched.relation or watched.table_name
        except WatchError:
            # unwatch says why it cannot, or detaches the triggers of a table that lost its registration
            name = relation = None
        if relation is not None and one_row(conn.execute(Q.relation_exists, (relation,)))[0]:
            conn.execute(sql.SQL(Q.lock_table_for_unwatch).format(sql.SQL(relation)))
        left = backlog(conn, name) if name is not None else None
        if left and left.pending and not drop_pending:
            raise ConfigError(
                f"{name} has {left.pending} pending change(s) not yet in its index (deletes included); unwatching "
                "would drop them: let `workerpool run --drain` sync them first, or pass --drop-pending to drop them"
            )
        return unwatch(conn, name or table), left


@dataclass(frozen=True)
class Retried:
    """What a retry of failed rows did: rows returned to the queue, and rows kept because their key is
    too long for an objectID (they can never sync)."""

    returned: int
    kept_too_long: int


def retry_failed(conn: psycopg.Connection, table: str | None = None, ids: list[int] | None = None) -> Retried:
    """Return failed rows to the queue: every one, a table's (named as `watch` takes it, or a table no
    longer watched whose rows the queue holds), or those of `ids`; `retry-failed` and the dashboard's
    retry both call it. WatchError for a table the queue knows nothing of."""
    name = queue_table_name(conn, table) if table is not None else None
    returned = one_row(conn.execute(Q.retry_failed, (name, ids)))[0]
    kept = one_row(conn.execute(Q.over_long_failed, {"t": name, "ids": ids}))[0]
    return Retried(returned, kept)


def cleanup(conn: psycopg.Connection, days: int) -> int:
    """Delete log rows older than `days` days (`workerpool cleanup`); returns how many."""
    deleted: int = one_row(conn.execute(Q.cleanup_old_sync_records, (days,)))[0]
    return deleted


def watched_indices(conn: psycopg.Connection) -> list[str]:
    """The indices of the enabled registrations, without ALGOLIA_INDEX_PREFIX."""
    return [r[0] for r in conn.execute(Q.watched_indices)]
