"""`enqueue`: ask for keys to be synced, inside the caller's own transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from workerpool.capture import keys as key_sql
from workerpool.capture.model import Watched, find_watched
from workerpool.db.connection import one_row
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
    `"007"` for an integer key becomes `"7"`. A table with a composite key takes each key as a
    tuple of its columns' values in key order (`(1, 23)` becomes the objectID `{1,23}`). Returns
    how many keys were queued (a key already pending is not queued twice); raises `WatchError` for
    a table that is not watched and `ValueError` for a bad operation or key, leaving the
    transaction usable.

    Examples:
        >>> with psycopg.connect(dsn) as conn:      # one transaction, committed on exit
        ...     enqueue(conn, "products", [1, 2, 3])
        3
    """
    op = operation.upper()
    if op not in OPERATIONS:
        raise ValueError(f"operation={operation!r} is not one of {', '.join(OPERATIONS)}")
    keys = list(keys)
    watched = find_watched(conn, table)
    parts = _parts(watched, keys)
    if not keys:
        return 0
    with conn.transaction():  # a savepoint inside the caller's transaction; its own one in autocommit
        values = _canonical(conn, watched, parts)
        return queue.enqueue(conn, watched.table_name, values, op)


def _text(table: str, value: object) -> str:
    if value is None:
        raise ValueError(f"a key of {table} is None; keys must have a value")
    return value if isinstance(value, str) else str(value)


def _parts(watched: Watched, keys: list[object]) -> list[list[str]]:
    """The keys' values as text, one list per key column."""
    columns = key_sql.columns(watched)
    if not watched.key_columns:
        return [[_text(watched.table_name, key) for key in keys]]
    parts: list[list[str]] = [[] for _ in columns]
    for key in keys:
        if isinstance(key, str | bytes) or not isinstance(key, Sequence) or len(key) != len(columns):
            raise ValueError(
                f"key {key!r} of {watched.table_name} is not valid; its key is composite: expected a tuple of "
                f"{len(columns)} values ({', '.join(name for name, _ in columns)})"
            )
        for values, value in zip(parts, key, strict=True):
            values.append(_text(watched.table_name, value))
    return parts


def _canonical(conn: psycopg.Connection[Any], watched: Watched, parts: list[list[str]]) -> list[str]:
    """The keys as the capture triggers turn them into text: each value cast to its column's type,
    under the pinned date/time settings when the key's text depends on them (restored afterwards)."""
    columns = key_sql.columns(watched)
    pinned = any(one_row(conn.execute(Q.key_text_is_pinned, (typ,)))[0] for _, typ in columns)
    restore: dict[str, str] = {}
    if pinned:
        for name, value in _PINNED.items():
            restore[name] = str(conn.execute(Q.current_setting, (name,)).fetchone()[0])  # type: ignore[index]
            conn.execute(Q.set_local_config, (name, value))
    names = [sql.Identifier(f"p{i}") for i in range(len(columns))]
    text = (
        key_sql.canonical(watched, sql.SQL("k.p0"))
        if not watched.key_columns
        else key_sql.from_parts(watched, [sql.SQL("k.{}").format(n) for n in names])
    )
    query = sql.SQL(Q.canonical_keys).format(
        text=text,
        arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in columns),
        names=sql.SQL(", ").join(names),
    )
    try:
        found = conn.execute(query, parts).fetchone()
    except (psycopg.errors.DataError, psycopg.errors.InvalidTextRepresentation) as exc:
        expected = ", ".join(f"{name} {typ}" for name, typ in columns) if watched.key_columns else watched.key_type
        raise ValueError(
            f"a key of {watched.table_name} is not a valid {expected}: {exc.diag.message_primary}"
        ) from None
    for name, value in restore.items():
        conn.execute(Q.set_local_config, (name, value))
    return list(found[0]) if found and found[0] else []
