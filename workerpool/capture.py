"""Capture: registering a table's index and attaching the enqueue triggers.

Every identifier a user gives is resolved through the catalog and composed with psycopg.sql, never
interpolated raw: a table called `Order Items` works, and `"; drop table x; --` is refused as a table
that does not exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

TRIGGERS = {
    "INSERT": ("algolia_sync_insert", "REFERENCING NEW TABLE AS new_rows"),
    "UPDATE": ("algolia_sync_update", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    "DELETE": ("algolia_sync_delete", "REFERENCING OLD TABLE AS old_rows"),
}
_INDEX_NAME = re.compile(r"^[^\s/#?%&]{1,256}$")


class WatchError(Exception):
    """A `watch`/`unwatch` request that cannot be honoured; the message is one line for the user."""


@dataclass(frozen=True)
class Watched:
    """One row of algolia_index_config: where a table's records come from and where they go."""

    table_name: str
    index_name: str
    key_column: str
    key_type: str
    source_view: str | None = None


def resolve_relation(conn: psycopg.Connection, name: str, kinds: str = "rp") -> tuple[int, str]:
    """(oid, canonical name) of a table or view named as typed: `Order Items`, `public.products`, `"X"`."""
    for candidate in (_as_single_identifier(conn, name), name):
        try:
            row = conn.execute(
                "SELECT c.oid, c.oid::regclass::text, c.relkind FROM pg_class c WHERE c.oid = to_regclass(%s)",
                (candidate,),
            ).fetchone()
        except psycopg.errors.InvalidName:
            row = None
        if row:
            if row[2] not in kinds:
                wanted = "a table" if kinds == "rp" else "a table or view"
                raise WatchError(f"{name!r} is not {wanted} (relkind {row[2]!r})")
            return row[0], row[1]
    raise WatchError(f"table or view {name!r} does not exist (check the name and the search_path)")


def _as_single_identifier(conn: psycopg.Connection, name: str) -> str:
    return sql.Identifier(name).as_string(conn)


def _columns(conn: psycopg.Connection, oid: int) -> dict[str, str]:
    rows = conn.execute(
        """SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
            WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum""",
        (oid,),
    ).fetchall()
    return dict(rows)


def _primary_key(conn: psycopg.Connection, oid: int) -> list[str]:
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
            WHERE i.indrelid = %s AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)""",
        (oid,),
    ).fetchall()
    return [r[0] for r in rows]


def watch(
    conn: psycopg.Connection,
    table: str,
    index_name: str,
    key: str | None = None,
    source: str | None = None,
) -> Watched:
    """Register `table` for `index_name` and attach its triggers. Re-running updates the registration."""
    if not _INDEX_NAME.match(index_name or ""):
        raise WatchError(
            f"index name {index_name!r} is not valid; expected 1-256 characters without spaces, '/', '#', '?', '%' or '&'"
        )
    oid, table_name = resolve_relation(conn, table)
    columns = _columns(conn, oid)
    if key is None:
        pk = _primary_key(conn, oid)
        if len(pk) != 1:
            raise WatchError(
                f"table {table_name} has {'no primary key' if not pk else 'a composite primary key ' + str(pk)}; "
                "pass --key COLUMN naming a unique, non-null column"
            )
        key = pk[0]
    if key not in columns:
        raise WatchError(f"column {key!r} does not exist in {table_name}; columns are {', '.join(columns)}")
    source_name = None
    if source:
        source_oid, source_name = resolve_relation(conn, source, kinds="rvmpf")
        if key not in _columns(conn, source_oid):
            raise WatchError(f"source {source_name} has no column {key!r}; it must expose the table's key")

    watched = Watched(table_name, index_name, key, columns[key], source_name)
    table_ident = sql.SQL(table_name)  # regclass text output is already quoted where needed
    with conn.transaction():
        conn.execute(
            """INSERT INTO algolia_index_config (table_name, index_name, key_column, key_type, source_view)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (table_name) DO UPDATE
                  SET index_name = EXCLUDED.index_name, key_column = EXCLUDED.key_column,
                      key_type = EXCLUDED.key_type, source_view = EXCLUDED.source_view,
                      enabled = true, updated_at = now()""",
            (watched.table_name, watched.index_name, watched.key_column, watched.key_type, watched.source_view),
        )
        for event, (trigger, referencing) in TRIGGERS.items():
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trigger), table_ident))
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {trigger} AFTER {event} ON {table} {referencing} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION algolia_sync_enqueue({key}, {name})"
                ).format(
                    trigger=sql.Identifier(trigger),
                    event=sql.SQL(event),
                    table=table_ident,
                    referencing=sql.SQL(referencing),
                    key=sql.Literal(key),
                    name=sql.Literal(table_name),
                )
            )
    return watched


def unwatch(conn: psycopg.Connection, table: str) -> str:
    """Detach the triggers and forget the table's registration and queued rows. The index is left as is."""
    registered = conn.execute("SELECT table_name FROM algolia_index_config").fetchall()
    names = {r[0] for r in registered}
    try:
        _, table_name = resolve_relation(conn, table)
    except WatchError:
        if table not in names:
            raise WatchError(f"table {table!r} is not watched; watched tables are: {', '.join(sorted(names)) or 'none'}") from None
        table_name = table  # the table was dropped; clean up what is left
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table_name,)).fetchone()[0]
        if exists:
            for trigger, _ in TRIGGERS.values():
                conn.execute(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trigger), sql.SQL(table_name))
                )
        deleted = conn.execute("DELETE FROM algolia_index_config WHERE table_name = %s", (table_name,)).rowcount
        conn.execute("DELETE FROM algolia_sync_queue WHERE table_name = %s AND status <> 'failed'", (table_name,))
    if not deleted and not exists:
        raise WatchError(f"table {table!r} is not watched")
    return table_name


def load_watched(conn: psycopg.Connection) -> dict[str, Watched]:
    """Every enabled registration, by table name."""
    rows = conn.execute(
        """SELECT table_name, index_name, key_column, key_type, source_view
             FROM algolia_index_config WHERE enabled"""
    ).fetchall()
    return {r[0]: Watched(*r) for r in rows}
