"""A watched table's key: which columns can be one (`watch`), how a row's key becomes its objectID,
and how an objectID finds its row again.

A one-column key's objectID is the column's text (`42`, `sku-7`), under the pinned date/time
settings. A key of several columns (a composite primary key, `--key a,b`) is PostgreSQL's array
literal of its columns' texts, in key order: `{1,23}`, `{"2022-01-24 12:00:00+00",16050}`. A part
holding a comma, brace, quote, backslash or white space (or the word NULL, or nothing) is quoted, with
quotes and backslashes escaped, so no part can forge a separator, and `objectID::text[]` gives the
parts back. The capture triggers write it in SQL (schema.sql: algolia_sync_key_text); the
queries here read with it.

A one-column key keeps the queries it always had (`key = $1::type`): only a composite key takes the
parts apart.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from workerpool.capture.model import Watched, WatchError
from workerpool.db.connection import one_row
from workerpool.db.queries import Q

# ---- which columns can be a key (`watch`) ---------------------------------------------------------

# Key types whose text form is the same in every session (with DateStyle, TimeZone and
# IntervalStyle pinned where the capture and the workers turn them into text), so an objectID
# depends on the row alone. Anything else is refused by `watch`.
KEY_TYPES = (
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "text",
    "character varying",
    "character",
    "name",
    "citext",
    "uuid",
    "boolean",
    "oid",
    "inet",
    "cidr",
    "macaddr",
    "macaddr8",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "time without time zone",
    "time with time zone",
    "interval",
)


def _key_type_problem(conn: psycopg.Connection, oid: int, column: str) -> str | None:
    """Why `column` cannot be a key (its type has no canonical text form), or None."""
    typ, base, is_enum, cast_function = one_row(conn.execute(Q.key_type, (oid, column)))
    if is_enum and cast_function:
        return (
            f"--key {column!r} has type {typ}, which has a cast to or from text that runs a function: the pool "
            "would run that function to read keys; drop the cast (DROP CAST) or key the table by another column"
        )
    if base in KEY_TYPES or is_enum:
        return None
    return (
        f"--key {column!r} has type {typ}, whose text form is not canonical (it depends on session settings "
        f"or is not a scalar); key types supported: integers, numeric, text types, uuid, enums, boolean, "
        f"network addresses, date/time types and interval"
    )


def primary_key(conn: psycopg.Connection, oid: int) -> list[str]:
    """A table's primary-key columns, in key order (empty without one)."""
    rows = conn.execute(
        Q.primary_key,
        (oid,),
    ).fetchall()
    return [r[0] for r in rows]


def _is_unique(conn: psycopg.Connection, oid: int, key_columns: list[str]) -> bool:
    """Whether a unique index (or the primary key) has exactly these key columns."""
    unique: bool = one_row(conn.execute(Q.is_unique, {"oid": oid, "columns": key_columns}))[0]
    return unique


def parse(spec: str | list[str] | tuple[str, ...] | None) -> list[str] | None:
    """The key columns a `--key` names: `id`, or `a,b` for a composite key (a list passes as is)."""
    if spec is None:
        return None
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise WatchError(
            f"--key {','.join(names)!r} is not valid; expected one column or several joined by commas, each once, "
            "e.g. id or store_id,product_id"
        )
    return names


def resolve(
    conn: psycopg.Connection, oid: int, table_name: str, columns: dict[str, str], key: list[str] | None
) -> list[str]:
    """The key columns of a registration: the ones given, else the primary key; refused unless a
    unique index has exactly those columns and each has a canonical text form."""
    if key is None:
        key = primary_key(conn, oid)
        if not key:
            raise WatchError(
                f"table {table_name} has no primary key; pass --key COLUMN[,COLUMN...] naming the columns "
                "of a unique index on non-null columns"
            )
    for column in key:
        if column not in columns:
            raise WatchError(f"column {column!r} does not exist in {table_name}; columns are {', '.join(columns)}")
    if not _is_unique(conn, oid, key):
        named = ", ".join(key)
        raise WatchError(
            f"--key {','.join(key)!r} is not unique in {table_name}; add a unique index on "
            f"{'it' if len(key) == 1 else 'those columns'} (CREATE UNIQUE INDEX ON {table_name} ({named})) "
            "or pick a unique column"
        )
    for column in key:
        problem = _key_type_problem(conn, oid, column)
        if problem:
            raise WatchError(problem)
    return key


# ---- the key in SQL -------------------------------------------------------------------------------


def columns(watched: Watched) -> list[tuple[str, str]]:
    """The key's `(column, type)` pairs in key order (one for a one-column key)."""
    if watched.key_columns:
        return list(zip(watched.key_columns, watched.key_types, strict=True))
    return [(watched.key_column, watched.key_type)]


def part(watched: Watched, text: sql.Composable, i: int) -> sql.Composable:
    """The `i`-th key column's value (cast to its type) of the key text `text`."""
    typ = columns(watched)[i][1]
    if not watched.key_columns:
        return sql.SQL("{}::{}").format(text, sql.SQL(typ))
    return sql.SQL("({}::pg_catalog.text[])[{}]::{}").format(text, sql.Literal(i + 1), sql.SQL(typ))


def matches(watched: Watched, row: str, text: sql.Composable) -> sql.Composable:
    """The condition that row `row` has the key whose text is `text`: one equality per key column, so
    the planner probes the table's key index."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(row, name), part(watched, text, i))
        for i, (name, _) in enumerate(columns(watched))
    )


def _key_text(texts: list[sql.Composable]) -> sql.Composable:
    """The key text of its parts' texts: the one part's, or the array literal of several."""
    if len(texts) == 1:
        return texts[0]
    return sql.SQL("ARRAY[{}]::pg_catalog.text").format(sql.SQL(", ").join(texts))


def text_of(watched: Watched, row: str) -> sql.Composable:
    """The key text (objectID) of row `row`, as the capture triggers write it (under `pooling.pinned`)."""
    return _key_text([sql.SQL("{}::pg_catalog.text").format(sql.Identifier(row, name)) for name, _ in columns(watched)])


def present(watched: Watched, row: str) -> sql.Composable:
    """The condition that row `row` has a key (none of its key columns is NULL)."""
    return sql.SQL(" AND ").join(
        sql.SQL("{} IS NOT NULL").format(sql.Identifier(row, name)) for name, _ in columns(watched)
    )


def order(watched: Watched, row: str) -> sql.Composable:
    """The key columns of row `row`, in key order (for ORDER BY and row comparisons)."""
    return sql.SQL(", ").join(sql.Identifier(row, name) for name, _ in columns(watched))


def after(watched: Watched, row: str, text: sql.Composable) -> sql.Composable:
    """The condition that row `row` comes after the key whose text is `text`, in key order (a row
    comparison, which a btree index on the key columns serves)."""
    n = len(columns(watched))
    return sql.SQL("({}) > ({})").format(
        order(watched, row), sql.SQL(", ").join(part(watched, text, i) for i in range(n))
    )


def canonical(watched: Watched, text: sql.Composable) -> sql.Composable:
    """The canonical key text of the key text `text`: each part cast to its column's type and back.
    Equal to `text` only for a key that is exactly some row's objectID (not `007` for 7, not two
    parts for a key of three); raises a DataError for a part its type cannot hold."""
    return _key_text(
        [sql.SQL("({})::pg_catalog.text").format(part(watched, text, i)) for i in range(len(columns(watched)))]
    )


def from_parts(watched: Watched, parts: list[sql.Composable]) -> sql.Composable:
    """The key text of a composite key given as one text value per column (cast to each column's type
    and back, so it is canonical)."""
    return _key_text(
        [
            sql.SQL("({}::{})::pg_catalog.text").format(p, sql.SQL(typ))
            for p, (_, typ) in zip(parts, columns(watched), strict=True)
        ]
    )
