"""`enqueue`: ask for keys to be synced, inside the caller's own transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import sql

from workerpool.capture.model import find_watched

OPERATIONS = ("INSERT", "UPDATE", "DELETE")
KEYS_PER_INBOX_ROW = 1000  # as the capture triggers write them
NOTIFY_CHANNEL = "algolia_sync"
_PINNED = {"DateStyle": "ISO, YMD", "TimeZone": "UTC", "IntervalStyle": "postgres"}


def enqueue(conn: psycopg.Connection[Any], table: str, keys: Iterable[object], operation: str = "UPDATE") -> int:
    """Request a sync of `keys` of the watched `table`, in `conn`'s current transaction.

    Writes exactly what the capture triggers write (inbox rows of at most 1,000 keys, then a NOTIFY),
    so the keys are synced only if the transaction commits, and a rollback leaves nothing behind. Use
    it where the triggers did not fire (a COPY or bulk load with triggers disabled, a
    `session_replication_role = replica` migration) or to force a resync. The operation is only a
    label for the log: the worker always sends the row as it is when it reads it (a key without a
    row is deleted from the index). Keys are cast to the table's key type and written in its
    canonical text form (the objectID): `"007"` for an integer key becomes `"7"`. Returns how many keys
    were enqueued; raises `WatchError` for a table that is not watched and `ValueError` for a bad
    operation or key.

    Examples:
        >>> with psycopg.connect(dsn) as conn:      # one transaction, committed on exit
        ...     conn.execute("COPY ...")             # or any write that bypassed the triggers
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
        pinned = conn.execute("SELECT algolia_sync_key_settings(%s::regtype) <> ''", (watched.key_type,)).fetchone()
        restore = {}
        if pinned and pinned[0]:  # date/time keys: their text form depends on the session, as in the triggers
            for name, value in _PINNED.items():
                restore[name] = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]  # type: ignore[index]
                conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        try:
            canonical = conn.execute(
                sql.SQL("SELECT array_agg(k::{}::text) FROM unnest(%s::text[]) AS k").format(sql.SQL(watched.key_type)),
                (texts,),
            ).fetchone()
        except (psycopg.errors.DataError, psycopg.errors.InvalidTextRepresentation) as exc:
            raise ValueError(
                f"a key of {watched.table_name} is not a valid {watched.key_type}: {exc.diag.message_primary}"
            ) from None
        for name, value in restore.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        values: list[str] = canonical[0] if canonical else []
        for start in range(0, len(values), KEYS_PER_INBOX_ROW):
            chunk = values[start : start + KEYS_PER_INBOX_ROW]
            conn.execute(
                "INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids) VALUES (%s, %s, %s, %s)",
                (watched.table_name, op, len(chunk), chunk),
            )
        conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, watched.table_name))
    return len(values)
