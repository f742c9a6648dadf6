"""What a registration is: a watched table as `algolia_index_config` records it, read back by oid.

Every command that takes a table accepts it as `watch` does (`My Table`, `public.products`, `"X"`) and
resolves it here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from workerpool.db.queries import Q

# A user's transform: a record in, the record to index (or None: delete it) out. The result is user
# code's, so it is typed Any; the worker fails the record when it is neither a mapping nor None.
Transform = Callable[[dict[str, Any]], Any]


class WatchError(Exception):
    """A `watch`/`unwatch` request that cannot be honoured; the message is one line for the user."""


@dataclass(frozen=True)
class Watched:
    """One row of algolia_index_config: where a table's records come from and where they go.

    `table_name` is the registration's name (what queue rows carry); `relation` is the table as it
    is called now (regclass text, quoted where needed), which differs after an `ALTER TABLE … RENAME`.
    A key of several columns is `key_columns` and `key_types`, in key order (`capture/keys.py` says
    what its objectID is); `key_column` and `key_type` then name them all, joined by commas, for
    messages. Both are empty for a one-column key.
    """

    table_name: str
    index_name: str
    key_column: str
    key_type: str
    source_view: str | None = None
    attributes: tuple[str, ...] | None = None
    transform: str | None = None
    relation: str = ""
    key_columns: tuple[str, ...] = ()
    key_types: tuple[str, ...] = ()

    @property
    def reads_from(self) -> str:
        """The relation records are read from: the source view, else the table (regclass text)."""
        return self.source_view or self.relation or self.table_name


@dataclass(frozen=True)
class Related:
    """Changes to `related_table` re-enqueue the watched rows whose `fk_column` equals its `ref_column`
    (for a foreign key of several columns, each column and the one in the same place of the other,
    joined by commas: `store_id,sku`)."""

    related_table: str
    fk_column: str
    ref_column: str | None = None

    @classmethod
    def parse(cls, spec: str) -> Related:
        """`brands:brand_id` or `brands:brand_id:id` (TABLE:FK_COLUMN[:REFERENCED_COLUMN]); a foreign
        key of several columns names them joined by commas: `store_products:store_id,sku`."""
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise WatchError(
                f"--related {spec!r} is not valid; expected TABLE:FK_COLUMN[:REFERENCED_COLUMN], e.g. brands:brand_id"
            )
        return cls(*parts)


def resolve_relation(conn: psycopg.Connection, name: str, kinds: str = "rp") -> tuple[int, str]:
    """(oid, canonical name) of a table or view named as typed: `Order Items`, `public.products`, `"X"`."""
    candidates = [_as_single_identifier(conn, name), name]
    if "." in name and '"' not in name:  # `shop.Order Items`: a schema and a name as typed
        candidates.append(sql.Identifier(*name.split(".", 1)).as_string(conn))
    for candidate in candidates:
        try:
            # A savepoint: a name Postgres cannot parse (`"x`) must not abort a caller's transaction.
            with conn.transaction():
                row = conn.execute(Q.resolve_relation, (candidate,)).fetchone()
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


def load_watched(conn: psycopg.Connection) -> dict[str, Watched]:
    """Every enabled registration, by table name, with the table, key and source view as they are
    called now (read through their oids: a rename since `watch` does not break reading them)."""
    rows = conn.execute(Q.load_watched).fetchall()
    return {
        table: Watched(
            table,
            index,
            ",".join(key_columns) if key_columns else key,
            ",".join(key_types) if key_columns and key_types else key_type,
            source_view,
            tuple(attributes) if attributes is not None else None,
            transform,
            relation,
            tuple(key_columns) if key_columns else (),
            # A dropped table's registration keeps its column names; its reads fail on the table.
            (tuple(key_types) if key_types else ("text",) * len(key_columns)) if key_columns else (),
        )
        for table, index, key, key_type, source_view, attributes, transform, relation, key_columns, key_types in rows
    }


def load_transform(spec: str) -> Transform:
    """Import the `module:function` a transform names; a bad name is a WatchError naming it."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise WatchError(
            f"--transform {spec!r} is not valid; expected module:function, e.g. myapp.search:product_record"
        )
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise WatchError(f"--transform {spec!r} cannot be loaded: {exc}") from None
    if not callable(func):
        raise WatchError(f"--transform {spec!r} is not callable")
    transform: Transform = func
    return transform


def find_watched(conn: psycopg.Connection, table: str) -> Watched:
    """The registration of `table` as the user typed it (`products`, `public.products`, `"Order Items"`)."""
    registered = load_watched(conn)
    if table in registered:
        return registered[table]
    try:
        _, canonical = resolve_relation(conn, table)
    except WatchError:
        canonical = None
    if canonical and canonical in registered:
        return registered[canonical]
    renamed = [w for w in registered.values() if canonical and w.relation == canonical]
    if renamed:  # watched under an older name
        return renamed[0]
    names = ", ".join(sorted(registered)) or "none"
    raise WatchError(f"table {table!r} is not watched; watched tables are: {names}")
