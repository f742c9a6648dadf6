"""`enqueue`: ask for keys to be synced, inside the caller's own transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from workerpool.capture.model import find_watched
from workerpool.db.queries import Q
from workerpool.runtime import queue

OPERATIONS = ("INSERT", "UPDATE", "DELETE", "REINDEX")
_PINNED = {"DateStyle": "ISO, YMD", "TimeZone": "UTC", "IntervalStyle": "postgres"}


def enqueue(conn: psycopg.Connection[Any], table: str, keys: Iterable[object], operation: str = "UPDATE") -> int:
    """Request a sync of `keys` of the watched `table`, in `conn`'s current transaction.

    Queues the keys as `reindex` and `verify --repair` do, and wakes the workers at commit: the keys
    are synced only if the transaction commits, and a rollback leaves nothing behind. Use it where
    the triggers did not fire (a record read from a `--source` view whose other tables changed, a
    load by a role that turned the triggers off) or to force a resync. The worker always sends the
    row as it is when it reads it (a key without a row is deleted from the index); `operation` is
    what the log records, and `REINDEX` also replaces the record whole even when it is unchanged.
    Keys are cast to the table's key type and written in its canonical text form (the objectID):
    `"007"` for an integer key becomes `"7"`. Returns how many keys were queued (a key already
    pending is not queued twice); raises `WatchError` for a table that is not watched and
    `ValueError` for a bad operation or key, leaving the transaction usable.

    Examples:
        >>> with psycopg.connect(dsn) as conn:      # one transaction, committed on exit
        ...     enqueue(conn, "products", [1, 2, 3])
        3
    """
    op = operation.upper()
    if op not in OPERATIONS:
        raise ValueError(f"operation={operation!r} is not one of {', '.join(OPERATIONS)}")
    texts = []
    for key in keys:
        if key is None:
            raise ValueError(f"a key of {table} is None; keys must have a value")
        texts.append(key if isinstance(key, str) else str(key))
    watched = find_watched(conn, table)
    if not texts:
        return 0
    with conn.transaction():  # a savepoint inside the caller's transaction; its own one in autocommit
        values = _canonical(conn, watched.table_name, watched.key_type, texts)
        return queue.enqueue(conn, watched.table_name, values, op)


def _canonical(conn: psycopg.Connection[Any], table: str, key_type: str, keys: list[str]) -> list[str]:
    """The keys as the capture triggers turn them into text: cast to the key's type, under the pinned
    date/time settings when the key's text depends on them (restored afterwards)."""
    pinned = conn.execute(Q.key_text_is_pinned, (key_type,)).fetchone()
    restore: dict[str, str] = {}
    if pinned and pinned[0]:
        for name, value in _PINNED.items():
            restore[name] = str(conn.execute(Q.current_setting, (name,)).fetchone()[0])  # type: ignore[index]
            conn.execute(Q.set_local_config, (name, value))
    try:
        found = conn.execute(sql.SQL(Q.canonical_keys).format(sql.SQL(key_type)), (keys,)).fetchone()
    except (psycopg.errors.DataError, psycopg.errors.InvalidTextRepresentation) as exc:
        raise ValueError(f"a key of {table} is not a valid {key_type}: {exc.diag.message_primary}") from None
    for name, value in restore.items():
        conn.execute(Q.set_local_config, (name, value))
    return list(found[0]) if found and found[0] else []
