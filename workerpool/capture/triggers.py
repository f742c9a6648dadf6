"""Capture: registering a table's index and attaching the enqueue triggers.

Every identifier a user gives is resolved through the catalog and composed with psycopg.sql, never
interpolated raw: a table called `Order Items` works, and `"; drop table x; --` is refused as a table
that does not exist.
"""

from __future__ import annotations

import hashlib
import re

import psycopg
from psycopg import sql

from workerpool.capture import keys as key_sql
from workerpool.capture.model import (
    Related,
    Watched,
    WatchError,
    load_transform,
    resolve_relation,
)
from workerpool.db.connection import one_row
from workerpool.db.privileges import check_schema_trust, grant_watched, install_schema, pool_role_warnings
from workerpool.db.queries import Q
from workerpool.failures import database_error

# The events whose triggers on a related table re-enqueue the watched rows (a watched table's own
# triggers are attached by `algolia_sync_attach` in SQL).
RELATED_EVENTS = ("INSERT", "UPDATE", "DELETE", "TRUNCATE")
_INDEX_NAME = re.compile(r"^[^\s/#?%&\x00-\x1f\x7f-\x9f]{1,256}$")  # no control characters either


def _nullable(conn: psycopg.Connection, oid: int, column: str) -> bool:
    return not one_row(conn.execute(Q.key_nullable, (oid, column)))[0]


def _columns(conn: psycopg.Connection, oid: int) -> dict[str, str]:
    rows = conn.execute(
        Q.table_columns,
        (oid,),
    ).fetchall()
    return dict(rows)


def watch(
    conn: psycopg.Connection,
    table: str,
    index_name: str,
    key: str | list[str] | tuple[str, ...] | None = None,
    source: str | None = None,
    attributes: list[str] | None = None,
    transform: str | None = None,
    related: list[Related] | tuple[Related, ...] = (),
) -> Watched:
    """Register `table` for `index_name` and attach its triggers. Re-running updates the registration.

    `key` names the key column, or several (a list, or joined by commas) for a composite key; the
    default is the primary key, of one column or several.
    `attributes` picks the columns that make up a record (and the only ones whose updates enqueue);
    `transform` names a `module:function` applied to each record; `related` tables re-enqueue the
    rows that point at a changed row of theirs. Refused, as by `migrate`, while a role workerpool
    does not trust may create objects in workerpool's schema (docs/roles.md).
    """
    if not _INDEX_NAME.match(index_name or ""):
        raise WatchError(
            f"index name {index_name!r} is not valid; expected 1-256 characters without spaces, control characters, "
            "'/', '#', '?', '%' or '&'"
        )
    check_schema_trust(conn, install_schema(conn))
    oid, table_name = resolve_relation(conn, table)
    columns = _columns(conn, oid)
    keys = key_sql.resolve(conn, oid, table_name, columns, key_sql.parse(key))
    source_name = None
    record_columns = columns
    if source:
        source_oid, source_name = resolve_relation(conn, source, kinds="rvmpf")
        record_columns = _columns(conn, source_oid)
        missing = [k for k in keys if k not in record_columns]
        if missing:
            raise WatchError(
                f"source {source_name} has no column {missing[0]!r}; it must expose the table's key ({', '.join(keys)})"
            )
    if attributes is not None:
        unknown = [a for a in attributes if a not in record_columns]
        if unknown or not attributes:
            named = ", ".join(map(repr, unknown)) if attributes else "nothing"
            raise WatchError(
                f"--attributes {','.join(attributes)!r} names {named} "
                f"not in {source_name or table_name}; columns are {', '.join(record_columns)}"
            )
    if transform is not None:
        load_transform(transform)
    links = [_resolve_related(conn, table_name, columns, r) for r in related]

    # Only a record made of plain table columns lets the trigger ignore updates to other columns.
    compared: list[str] = []
    if attributes is not None and not source_name:
        compared = list(dict.fromkeys([*keys, *attributes]))

    composite = len(keys) > 1
    watched = Watched(
        table_name,
        index_name,
        ",".join(keys),
        ",".join(columns[k] for k in keys),
        source_name,
        tuple(attributes) if attributes is not None else None,
        transform,
        table_name,
        tuple(keys) if composite else (),
        tuple(columns[k] for k in keys) if composite else (),
    )
    with conn.transaction():
        _adopt_renamed(conn, oid, table_name)
        conn.execute(
            Q.register,
            {
                "table": watched.table_name,
                "index": watched.index_name,
                "keys": keys,
                "ktype": watched.key_type,
                "source": watched.source_view,
                "attributes": list(watched.attributes) if watched.attributes is not None else None,
                "transform": watched.transform,
                "oid": oid,
            },
        )
        _drop_related_triggers(conn, table_name)
        for link in links:
            _attach_related(conn, table_name, oid, link)
        function = one_row(
            conn.execute(Q.create_capture, (_capture_function(conn, table_name), table_name, keys, compared, oid))
        )[0]
        conn.execute(Q.attach_capture, (oid, function))
        grant_watched(conn, _read_relations(conn, oid, source_name))
    return watched


def _read_relations(conn: psycopg.Connection, oid: int, source: str | None) -> list[int]:
    """The relations the pool reads for a registration: the table, and its source view if any."""
    return [oid] + ([resolve_relation(conn, source, kinds="rvmpf")[0]] if source else [])


def watch_warnings(conn: psycopg.Connection, watched: Watched) -> list[str]:
    """What `watch` accepted but the user should know: a nullable key, unindexed related links."""
    warnings = []
    oid, _ = resolve_relation(conn, watched.relation or watched.table_name)
    for column in watched.key_columns or (watched.key_column,):
        if _nullable(conn, oid, column):
            warnings.append(
                f"{watched.table_name}.{column} is nullable: rows whose key is NULL have no "
                "objectID and are not synced (add NOT NULL to make that impossible)"
            )
    warnings += pool_role_warnings(conn, _read_relations(conn, oid, watched.source_view))
    return warnings + unindexed_related(conn, watched.table_name)


def _adopt_renamed(conn: psycopg.Connection, oid: int, table_name: str) -> None:
    """A table watched under another name and renamed since: move its registration, and the keys
    waiting under the old name, to the new name (one registration per table)."""
    old = conn.execute(
        Q.renamed_registration,
        (oid, table_name),
    ).fetchone()
    if old is None:
        return
    _drop_related_triggers(conn, old[0])
    conn.execute(Q.detach_capture, (oid,))  # `watch` attaches the new ones
    conn.execute(sql.SQL(Q.drop_capture_function).format(sql.Identifier(_capture_function(conn, old[0]))))
    conn.execute(
        Q.drop_superseded_pending,
        {"old": old[0], "new": table_name},
    )
    for statement in (
        Q.rename_queue_rows,
        Q.rename_inbox_rows,
        Q.delete_registration_by_old_name,
    ):
        conn.execute(statement, {"old": old[0], "new": table_name})


def refresh_captures(conn: psycopg.Connection) -> list[str]:
    """Regenerate every registration's triggers from what `watch` stored (after an upgrade changed
    the generated code). Returns one warning per registration that could not be refreshed."""
    problems = []
    registrations = conn.execute(Q.registrations_to_refresh).fetchall()
    for table, index, key, source, attributes, transform, related, current in registrations:
        try:
            with conn.transaction():  # a savepoint inside `migrate`'s transaction
                watch(
                    conn,
                    current,
                    index,
                    key=key,
                    source=source,
                    attributes=attributes,
                    transform=None,
                    related=[Related(*link) for link in related],
                )
                if transform:
                    conn.execute(Q.set_transform, (transform, current))
        except WatchError as exc:
            problems.append(f"{table}: {exc}")
        except psycopg.Error as exc:
            problems.append(f"{table}: {database_error(exc)}")
    return problems


def unwatch(conn: psycopg.Connection, table: str) -> str:
    """Detach the triggers and forget the table's registration and queued rows. The index is left as is.

    `table` is the table as it is called now or the name it was watched under (a renamed or dropped
    table); the registration is found through the table's oid either way."""
    registered: dict[str, int | None] = dict(conn.execute(Q.registrations_by_relation).fetchall())
    try:
        oid, current = resolve_relation(conn, table)
        table_name = next((name for name, rel in registered.items() if rel == oid), current)
    except WatchError:
        if table not in registered:
            raise WatchError(
                f"table {table!r} is not watched; watched tables are: {', '.join(sorted(registered)) or 'none'}"
            ) from None
        table_name = table  # watched under this name: renamed since, or dropped
    relation = registered.get(table_name)
    with conn.transaction():
        if relation is None:  # a registration without an oid (dropped table, or written before version 5)
            relation = one_row(conn.execute(Q.regclass_oid, (table_name,)))[0]
        exists = relation is not None
        if exists:
            conn.execute(Q.detach_capture, (relation,))
        _drop_related_triggers(conn, table_name)
        conn.execute(sql.SQL(Q.drop_capture_function).format(sql.Identifier(_capture_function(conn, table_name))))
        deleted = conn.execute(Q.delete_registration, (table_name,)).rowcount
        conn.execute(Q.delete_unfailed_queue_rows, (table_name,))
        conn.execute(Q.delete_inbox_rows, (table_name,))
    if not deleted and not exists:
        raise WatchError(f"table {table!r} is not watched")
    return table_name


def _capture_function(conn: psycopg.Connection, table_name: str) -> str:
    """The name of the capture function generated for one watched table (named in SQL, where the
    migrations that regenerate captures name it too)."""
    name: str = one_row(conn.execute(Q.capture_function_name, (table_name,)))[0]
    return name


def _related_trigger_names(table_name: str, fk_column: str) -> dict[str, str]:
    tag = hashlib.md5(f"{table_name}\0{fk_column}".encode()).hexdigest()[:12]
    return {event: f"algolia_rel_{tag}_{event.lower()[:3]}" for event in RELATED_EVENTS}


def _resolve_related(conn: psycopg.Connection, table_name: str, columns: dict[str, str], link: Related) -> Related:
    """The link with the related table's current name and its columns named: the referenced
    columns default to the related table's primary key, which must have as many columns as the
    foreign key (`store_products:store_id,sku` for a key of two)."""
    oid, related_name = resolve_relation(conn, link.related_table)
    spec = f"--related {link.related_table}:{link.fk_column}"
    fks = link.fk_column.split(",")
    for fk in fks:
        if fk not in columns:
            raise WatchError(f"{spec}: {table_name} has no column {fk!r}")
    refs = link.ref_column.split(",") if link.ref_column else key_sql.primary_key(conn, oid)
    if len(refs) != len(fks):
        named = f"primary key ({', '.join(refs)})" if not link.ref_column else f"referenced columns ({link.ref_column})"
        raise WatchError(
            f"{spec}: the foreign key has {len(fks)} column(s) and {related_name}'s {named} {len(refs)}; "
            "name as many referenced columns, in order: TABLE:FK[,FK...]:REF[,REF...]"
        )
    related_columns = _columns(conn, oid)
    for ref in refs:
        if ref not in related_columns:
            raise WatchError(f"--related {link.related_table}: {related_name} has no column {ref!r}")
    return Related(related_name, ",".join(fks), ",".join(refs))


def unindexed_related(conn: psycopg.Connection, table: str) -> list[str]:
    """Warnings for `--related` links whose foreign-key column no index leads with: each statement
    on the related table then scans the whole watched table to find the rows to enqueue."""
    oid, table_name = resolve_relation(conn, table)
    rows = conn.execute(Q.unindexed_related, {"table": table_name, "oid": oid}).fetchall()
    return [
        f"{table_name}.{fk} has no index: every change to {related} scans all of {table_name} to find "
        f"its rows (CREATE INDEX ON {table_name} ({quoted}))"
        for related, fk, quoted in rows
    ]


def _attach_related(conn: psycopg.Connection, table_name: str, oid: int, link: Related) -> None:
    fk_attnum, ref_attnum = one_row(
        conn.execute(
            Q.insert_related,
            {
                "table": table_name,
                "related": link.related_table,
                "fk": link.fk_column.split(","),
                "ref": (link.ref_column or "").split(","),
                "oid": oid,
            },
        )
    )
    names = _related_trigger_names(table_name, link.fk_column)
    conn.execute(
        sql.SQL(Q.create_related_triggers).format(
            **{event.lower(): sql.Identifier(name) for event, name in names.items()},
            related=sql.SQL(link.related_table),
            table=sql.Literal(table_name),
            fk=sql.Literal(fk_attnum),
            ref=sql.Literal(ref_attnum),
        )
    )


def _drop_related_triggers(conn: psycopg.Connection, table_name: str) -> None:
    links = conn.execute(Q.delete_related, (table_name,)).fetchall()
    for related_table, fk_column in links:
        if one_row(conn.execute(Q.relation_exists, (related_table,)))[0]:
            for trigger in _related_trigger_names(table_name, fk_column).values():
                conn.execute(sql.SQL(Q.drop_trigger).format(sql.Identifier(trigger), sql.SQL(related_table)))
