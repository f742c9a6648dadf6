"""Tables as commands name them, and what the queue holds for them.

Every command that takes a table accepts it as `watch` does (`My Table`, `public.products`, `"X"`)
and works on the canonical name that `watch` stored in `algolia_index_config.table_name`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from workerpool.capture.model import WatchError, find_watched, resolve_relation
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
