"""No identifier can break the generated capture code (docs/roles.md): Hypothesis names the schema,
the tables, the key, a record column, the foreign key and the referenced column with `$`, `$$`,
`$body$`, quotes, `;`, `--`, newlines, `%`, unicode and 63-byte names; `watch`, writes of every kind,
renames followed by the DDL follower, and writes again all capture exactly the keys they should."""

from __future__ import annotations

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from testing import spill_all
from workerpool.capture.model import Related
from workerpool.capture.triggers import unwatch, watch

PIECES = [
    "$",
    "$$",
    "$body$",
    "$fn$",
    "'",
    '"',
    ";",
    "--",
    "\n",
    "%",
    "%s",
    "%I",
    "é",
    "表",
    " ",
    "a",
    "Z",
    "_",
    ")",
    "\\",
]


def _fits(name: str) -> bool:
    return 0 < len(name.encode()) <= 63 and not name.startswith("pg_")


NAME = st.lists(st.sampled_from(PIECES), min_size=1, max_size=20).map("".join).filter(_fits) | st.just(
    "$body$" + "x" * 57
)
NAMES = st.lists(NAME, min_size=9, max_size=9, unique=True)


def _id(*parts: str) -> sql.Identifier:
    return sql.Identifier(*parts)


def _queued(db: psycopg.Connection) -> set[tuple[str, str]]:
    spill_all(db)
    rows = db.execute("DELETE FROM algolia_sync_queue RETURNING record_id, operation").fetchall()
    return {(r[0], r[1]) for r in rows}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=NAMES)
def test_any_identifiers_are_captured_through_watch_renames_and_the_ddl_follower(db, names):
    schema, table, key, column, related, fk, ref, new_key, new_column = names
    db.execute(sql.SQL("CREATE SCHEMA {}").format(_id(schema)))
    try:
        create = "CREATE TABLE {}.{} ({} int PRIMARY KEY, {} text)"
        db.execute(sql.SQL(create).format(_id(schema), _id(related), _id(ref), _id(fk)))
        create = "CREATE TABLE {}.{} ({} int PRIMARY KEY, {} text, {} int, other int)"
        db.execute(sql.SQL(create).format(_id(schema), _id(table), _id(key), _id(column), _id(fk)))
        watched = sql.Identifier(schema, table).as_string(db)
        link = Related(sql.Identifier(schema, related).as_string(db), fk, ref)
        watch(db, watched, "idx", attributes=[column, fk], related=[link])
        reg = db.execute("SELECT table_name FROM algolia_index_config").fetchone()[0]
        t, k, c, f = _id(schema, table), _id(key), _id(column), _id(fk)
        db.execute(sql.SQL("INSERT INTO {} VALUES (1, 'r')").format(_id(schema, related)))
        db.execute(sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES (1, 'a', 1), (2, 'b', NULL)").format(t, k, c, f))
        assert _queued(db) == {("1", "INSERT"), ("2", "INSERT")}
        db.execute(sql.SQL("UPDATE {} SET other = 5").format(t))  # not a record column: nothing
        db.execute(sql.SQL("UPDATE {} SET {} = 'a2' WHERE {} = 1").format(t, c, k))
        db.execute(sql.SQL("DELETE FROM {} WHERE {} = 2").format(t, k))
        assert _queued(db) == {("1", "UPDATE"), ("2", "DELETE")}
        # Renames: the DDL follower regenerates the capture code under each new name.
        db.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(t, k, _id(new_key)))
        db.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(t, c, _id(new_column)))
        db.execute(sql.SQL("INSERT INTO {} ({}, {}) VALUES (3, 'c')").format(t, _id(new_key), _id(new_column)))
        db.execute(sql.SQL("UPDATE {} SET {} = 'c2' WHERE {} = 3").format(t, _id(new_column), _id(new_key)))
        db.execute(sql.SQL("UPDATE {} SET {} = 'r2'").format(_id(schema, related), f))
        assert _queued(db) == {("3", "UPDATE"), ("1", "UPDATE")}
        db.execute(sql.SQL("TRUNCATE {}").format(t))
        assert _queued(db) == {("1", "DELETE"), ("3", "DELETE")}
        assert db.execute("SELECT count(*) FROM algolia_sync_queue WHERE table_name <> %s", (reg,)).fetchone()[0] == 0
    finally:
        for (name,) in db.execute("SELECT table_name FROM algolia_index_config").fetchall():
            unwatch(db, name)
        db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(_id(schema)))
