"""What is left to sync, and whether an index matches its table."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from workerpool.emulator import Emulator
from workerpool.runtime import queue, records


def queue_counts(conn: psycopg.Connection) -> dict[str, int]:
    """Queue rows by status, and keys that bulk statements left in the inbox as "inbox": empty when
    nothing is left to sync."""
    return dict(
        conn.execute(
            """SELECT status, count(*) FROM algolia_sync_queue GROUP BY status
           UNION ALL SELECT 'inbox', sum(keys) FROM algolia_sync_inbox HAVING count(*) > 0"""
        ).fetchall()
    )


def spill_all(conn: psycopg.Connection, max_keys: int = 10_000) -> int:
    """Move every key waiting in the inbox into the queue, max_keys per call as a worker with that
    BATCH_SIZE does before it claims."""
    moved = 0
    while n := queue.spill(conn, max_keys):
        moved += n
    return moved


def objectid_sql(key: str | Sequence[str], alias: str = "t") -> sql.Composable:
    """A row's objectID, written here independently of workerpool's code: a key column's text, or
    for a composite key the array literal of its columns' texts."""
    if isinstance(key, str) or len(key) == 1:
        return sql.SQL("{}::text").format(sql.Identifier(alias, key if isinstance(key, str) else key[0]))
    return sql.SQL("ARRAY[{}]::text").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(alias, k)) for k in key)
    )


def expected_records(conn: psycopg.Connection, relation: str, key: str | Sequence[str]) -> dict[str, dict]:
    """What the index must hold for a table: every row, serialized as workerpool maps types."""
    import orjson

    from workerpool.db.connection import connect

    query = sql.SQL("SELECT {key} AS __oid, t.* FROM {rel} t").format(key=objectid_sql(key), rel=sql.SQL(relation))
    out = {}
    # Read as the workers read: their session settings and value loaders.
    with connect(conn.info.dsn, purpose="test") as pinned, pinned.cursor(row_factory=psycopg.rows.dict_row) as cur:
        for row in cur.execute(query):
            oid = row.pop("__oid")
            out[oid] = orjson.loads(records.dumps(records.to_record(row.keys(), row.values(), oid)))
    return out


def assert_index_matches(
    conn: psycopg.Connection, emulator: Emulator, relation: str, index: str, key: str | Sequence[str] = "id"
) -> None:
    """The index equals the table record for record: no missing, no extra, no stale."""
    expected = expected_records(conn, relation, key)
    actual = emulator.records(index)
    unversioned = sorted(k for k, r in actual.items() if not isinstance(r.pop("_version", None), int))
    assert not unversioned, f"records without an integer _version: {unversioned[:5]}"
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    stale = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    assert not (missing or extra or stale), (
        f"index {index} differs from {relation}: {len(missing)} missing {missing[:5]}, "
        f"{len(extra)} extra {extra[:5]}, {len(stale)} stale {[(k, expected[k], actual[k]) for k in stale[:2]]}"
    )
