"""Tables keyed by several columns, end to end: junction tables, per-store rows, and time-partitioned
tables keyed by (partition key, id), through the real CLI, worker and emulator.

A composite key's objectID is the array literal of its columns' texts, `{1,23}` (capture/keys.py).
The expected index is computed here independently (testing.index.objectid_sql) and compared record
for record.
"""

from __future__ import annotations

import json
import os

import psycopg
import pytest

from testing import API_KEY, APP_ID, drain, run_cli
from testing.index import assert_index_matches
from workerpool import enqueue
from workerpool.emulator import make_client
from workerpool.observability.dashboard.overview import MinuteSeries, collect

CAST = """
CREATE TABLE actors (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE films (id int PRIMARY KEY, title text NOT NULL);
CREATE TABLE film_actor (
    actor_id int NOT NULL REFERENCES actors (id) ON UPDATE CASCADE ON DELETE CASCADE,
    film_id  int NOT NULL REFERENCES films (id) ON UPDATE CASCADE ON DELETE CASCADE,
    role     text,
    PRIMARY KEY (actor_id, film_id)
);
"""
CAST_ROWS = """
INSERT INTO actors SELECT g, 'actor ' || g FROM generate_series(1, 20) g;
INSERT INTO films SELECT g, 'film ' || g FROM generate_series(1, 30) g;
INSERT INTO film_actor SELECT a, f, 'role ' || a || '/' || f
  FROM generate_series(1, 20) a, generate_series(1, 30) f WHERE (a + f) % 3 = 0;
"""

KEY = ["actor_id", "film_id"]


def _records(emulator, index: str) -> dict:
    return emulator.records(index)


def test_a_junction_table_is_watched_by_its_composite_primary_key(db, env, emulator):
    db.execute(CAST)
    watched = run_cli(env, "watch", "film_actor", "--index", "cast")
    assert watched.returncode == 0, watched.stderr
    assert "key (actor_id, film_id)" in watched.stdout
    db.execute(CAST_ROWS)
    drain(env)
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)
    assert _records(emulator, "cast")["{1,2}"]["role"] == "role 1/2"

    # Junction rows added and removed, a non-key column changed, and key changes cascading from both
    # parents: each old objectID is deleted and the new one written.
    db.execute("INSERT INTO film_actor VALUES (1, 1, 'new'), (2, 3, 'new') ON CONFLICT DO NOTHING")
    db.execute("DELETE FROM film_actor WHERE actor_id = 4")
    db.execute("UPDATE film_actor SET role = 'lead' WHERE film_id = 5")
    db.execute("UPDATE actors SET id = 100 WHERE id = 1")
    db.execute("UPDATE films SET id = 300 WHERE id = 2")
    db.execute("UPDATE film_actor SET film_id = 29 WHERE actor_id = 7 AND film_id = 2")  # a key part set directly
    drain(env)
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)
    records = _records(emulator, "cast")
    assert "{1,2}" not in records and "{100,300}" in records and not any(k.startswith("{4,") for k in records)

    # The Python API takes a composite key as a tuple of its values, cast to canonical text.
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        assert enqueue(conn, "film_actor", [(100, "0300"), ("5", 1)], operation="REINDEX") == 2
        assert sorted(r[0] for r in conn.execute("SELECT record_id FROM algolia_sync_queue")) == ["{100,300}", "{5,1}"]
        with pytest.raises(ValueError, match=r"expected a tuple of 2 values \(actor_id, film_id\)"):
            enqueue(conn, "film_actor", [7])
        with pytest.raises(
            ValueError,
            match=r"is not a valid actor_id integer, film_id integer: invalid input syntax for type integer: \"x\"",
        ):
            enqueue(conn, "film_actor", [(1, "x")])
    drain(env)
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)


def test_reindex_and_verify_walk_a_composite_key_in_chunks(db, env, emulator):
    db.execute(CAST + CAST_ROWS)  # before `watch`: only reindex sends these rows
    assert run_cli(env, "watch", "film_actor", "--index", "cast").returncode == 0
    result = run_cli(env, "reindex", "film_actor", "--chunk-size", "7")
    assert result.returncode == 0, result.stderr[-2000:]
    drain(env)
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)

    client = make_client(emulator.url, APP_ID, API_KEY)
    client.delete_object("cast", "{1,2}")  # missing
    client.partial_update_object("cast", "{2,1}", {"role": "tampered"})  # stale
    client.save_object("cast", {"objectID": "{19,28}", "role": "ghost"})  # extra: a key no row has
    client.save_object("cast", {"objectID": "{1,2,3}", "role": "ghost"})  # no key's text: deleted directly
    client.save_object("cast", {"objectID": "{01,2}", "role": "ghost"})  # not canonical: deleted directly
    client.save_object("cast", {"objectID": "7", "x": 1})  # not a composite key's text: deleted directly
    report = run_cli(env, "verify", "film_actor", "--json")
    assert report.returncode == 1, report.stderr[-2000:]
    found = json.loads(report.stdout)
    assert (found["missing"], found["stale"], found["extra"]) == (1, 1, 4), found["samples"]
    repaired = run_cli(env, "verify", "film_actor", "--repair", "--json")
    assert repaired.returncode == 1, repaired.stderr[-2000:]
    assert json.loads(repaired.stdout)["deleted"] == 3
    drain(env)
    assert run_cli(env, "verify", "film_actor").returncode == 0
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)


EVENTS = """
CREATE TABLE events (
    at    timestamptz NOT NULL,
    id    bigint NOT NULL,
    kind  text NOT NULL,
    PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);
CREATE TABLE events_2024_01 PARTITION OF events FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2024-02-01 00:00+00');
CREATE TABLE events_2024_02 PARTITION OF events FOR VALUES FROM ('2024-02-01 00:00+00') TO ('2024-03-01 00:00+00');
INSERT INTO events SELECT '2024-01-01 00:00+00'::timestamptz + g * interval '7 hours', g, 'k' || g % 4
  FROM generate_series(1, 200) g;
"""


def test_a_time_partitioned_table_keyed_by_partition_key_and_id(db, env, emulator):
    db.execute(EVENTS)
    db.execute("SET TimeZone = 'America/New_York'")  # the writer's zone changes no objectID
    watched = run_cli(env, "watch", "events", "--index", "events")
    assert watched.returncode == 0, watched.stderr
    run_cli(env, "reindex", "events")
    drain(env)
    assert_index_matches(db, emulator, "events", "events", ["at", "id"])
    assert '{"2024-01-01 07:00:00+00",1}' in _records(emulator, "events")

    # Rows move to the other partition when their partition key changes (through the parent), a
    # partition is written to directly, rows are deleted, and a partition is truncated.
    db.execute("UPDATE events SET at = at + interval '20 days' WHERE id BETWEEN 60 AND 80")
    db.execute("INSERT INTO events_2024_02 VALUES ('2024-02-10 12:00+00', 1000, 'direct')")
    db.execute("UPDATE events_2024_01 SET kind = 'changed' WHERE id < 10")
    db.execute("DELETE FROM events WHERE id % 10 = 0")
    drain(env)
    assert_index_matches(db, emulator, "events", "events", ["at", "id"])
    db.execute("TRUNCATE events_2024_02")
    drain(env)
    assert_index_matches(db, emulator, "events", "events", ["at", "id"])
    assert run_cli(env, "verify", "events").returncode == 0


def test_a_composite_key_named_with_key_must_be_a_unique_index(db, env):
    db.execute(
        "CREATE TABLE prices (store_id int NOT NULL, sku text NOT NULL, price numeric, note text);"
        "CREATE UNIQUE INDEX ON prices (sku, store_id);"
    )
    refused = run_cli(env, "watch", "prices", "--index", "prices", "--key", "store_id,price")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--key 'store_id,price' is not unique in prices" in refused.stderr
    assert "CREATE UNIQUE INDEX ON prices (store_id, price)" in refused.stderr
    assert run_cli(env, "watch", "prices", "--index", "prices", "--key", "store_id,store_id").returncode == 2
    accepted = run_cli(env, "watch", "prices", "--index", "prices", "--key", "store_id,sku")
    assert accepted.returncode == 0, accepted.stderr
    db.execute("CREATE TABLE logs (at timestamptz, line text)")
    no_key = run_cli(env, "watch", "logs", "--index", "logs")
    assert no_key.returncode == 2 and no_key.stderr.count("\n") == 1, no_key.stderr
    assert "table logs has no primary key; pass --key" in no_key.stderr


def test_a_source_view_and_a_related_table_feed_a_composite_keyed_index(db, env, emulator):
    db.execute(CAST)
    db.execute(
        "CREATE VIEW film_actor_names AS SELECT fa.actor_id, fa.film_id, fa.role, a.name AS actor"
        " FROM film_actor fa JOIN actors a ON a.id = fa.actor_id"
    )
    watched = run_cli(
        env, "watch", "film_actor", "--index", "cast", "--source", "film_actor_names", "--related", "actors:actor_id"
    )
    assert watched.returncode == 0, watched.stderr
    db.execute(CAST_ROWS)
    drain(env)
    assert_index_matches(db, emulator, "film_actor_names", "cast", KEY)
    db.execute("UPDATE actors SET name = 'renamed' WHERE id IN (1, 2)")  # re-enqueues their film_actor rows
    drain(env)
    assert_index_matches(db, emulator, "film_actor_names", "cast", KEY)
    assert emulator.records("cast")["{1,2}"]["actor"] == "renamed"

    # A foreign key of two columns cannot reference a primary key of one: refused with one line.
    refused = run_cli(env, "watch", "film_actor", "--index", "cast", "--related", "actors:actor_id,film_id")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "the foreign key has 2 column(s) and actors's primary key (id) 1" in refused.stderr


STORES = """
CREATE TYPE shelf AS ENUM ('front', 'back');
CREATE TABLE store_products (store_id int, sku text, shelf shelf, name text NOT NULL,
                             PRIMARY KEY (store_id, sku, shelf));
CREATE TABLE prices (id int PRIMARY KEY, store_id int NOT NULL, sku text NOT NULL, shelf shelf NOT NULL, price numeric,
                     FOREIGN KEY (store_id, sku, shelf) REFERENCES store_products ON UPDATE CASCADE);
CREATE INDEX ON prices (store_id, sku, shelf);
CREATE TABLE stock (id int PRIMARY KEY, store int NOT NULL, code text NOT NULL, qty int);
CREATE INDEX ON stock (store, code);
CREATE VIEW prices_named AS SELECT p.*, s.name FROM prices p JOIN store_products s USING (store_id, sku, shelf);
CREATE VIEW stock_named AS
    SELECT k.*, (SELECT string_agg(s.name, '/' ORDER BY s.shelf) FROM store_products s
                  WHERE s.store_id = k.store AND s.sku = k.code) AS names FROM stock k;
"""


def test_a_related_table_linked_by_a_foreign_key_of_several_columns(db, env, emulator):
    db.execute(STORES)
    # The referenced columns default to the related table's primary key (an enum among them: compared
    # as text), or are named, in order.
    for args in (
        ("prices", "--source", "prices_named", "--related", "store_products:store_id,sku,shelf"),
        ("stock", "--source", "stock_named", "--related", "store_products:store,code:store_id,sku"),
    ):
        watched = run_cli(env, "watch", args[0], "--index", *args)
        assert watched.returncode == 0, watched.stderr
        assert "has no index" not in watched.stderr
    db.execute(
        "INSERT INTO store_products VALUES (1, 'A,1', 'front', 'apple'), (1, 'A,1', 'back', 'apple b'),"
        " (2, 'A,1', 'front', 'apricot'), (1, 'B \"2\"', 'front', 'banana')"
    )
    db.execute(
        "INSERT INTO prices VALUES (10, 1, 'A,1', 'front', 1.5), (11, 2, 'A,1', 'front', 2),"
        " (12, 1, 'B \"2\"', 'front', 3)"
    )
    db.execute("INSERT INTO stock VALUES (20, 1, 'A,1', 5), (21, 2, 'A,1', 6), (22, 1, 'B \"2\"', 7)")
    drain(env)
    db.execute("UPDATE store_products SET name = name || '!' WHERE sku = 'A,1' AND store_id = 1")
    db.execute("UPDATE store_products SET sku = 'B3' WHERE sku = 'B \"2\"'")  # cascades into prices
    drain(env)
    assert_index_matches(db, emulator, "prices_named", "prices")
    assert_index_matches(db, emulator, "stock_named", "stock")
    assert (
        emulator.records("prices")["10"]["name"] == "apple!" and emulator.records("prices")["11"]["name"] == "apricot"
    )
    assert emulator.records("stock")["20"]["names"] == "apple!/apple b!"


def test_a_failed_composite_key_is_shown_retried_by_id_and_rebuilt_atomically(db, env, emulator):
    db.execute(CAST)
    assert run_cli(env, "watch", "film_actor", "--index", "cast").returncode == 0
    db.execute(CAST_ROWS)
    db.execute("UPDATE film_actor SET role = repeat('x', 5000) WHERE actor_id = 3 AND film_id = 3")
    drain(env, extra_env={"MAX_RECORD_BYTES": "2000"}, rows_fail=True)
    (failed_id, record_id, error) = db.execute(
        "SELECT id, record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'"
    ).fetchone()
    assert record_id == "{3,3}" and "MAX_RECORD_BYTES" in error, error
    # The dashboard lists the failed row under its objectID, for its retry button (by queue id).
    (cast,) = [t for t in collect(db, MinuteSeries())["indices"] if t["table"] == "film_actor"]
    assert [(r["id"], r["record_id"]) for r in cast["failed_rows"]] == [(failed_id, "{3,3}")]
    stats = run_cli(env, "stats", "--json")
    assert stats.returncode == 0 and json.loads(stats.stdout)["tables"][0]["failed"] == 1, stats.stdout[-2000:]
    assert run_cli(env, "retry-failed", "--id", str(failed_id)).returncode == 0
    drain(env)
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)

    atomic = run_cli(env, "reindex", "film_actor", "--atomic", "--chunk-size", "9")
    assert atomic.returncode == 0, atomic.stderr[-2000:]
    drain(env)
    assert_index_matches(db, emulator, "film_actor", "cast", KEY)


def test_a_junction_table_as_the_related_table_of_a_one_column_key(db, env, emulator):
    # films indexed with their cast (a --source view); film_actor, keyed (actor_id, film_id), is the
    # related table: adding or removing a junction row re-enqueues the film it points at.
    db.execute(CAST + CAST_ROWS)
    db.execute(
        "CREATE VIEW films_cast AS SELECT f.id, f.title,"
        " ARRAY(SELECT fa.actor_id FROM film_actor fa WHERE fa.film_id = f.id ORDER BY 1) AS actor_ids FROM films f"
    )
    watched = run_cli(
        env, "watch", "films", "--index", "films", "--source", "films_cast", "--related", "film_actor:id:film_id"
    )
    assert watched.returncode == 0, watched.stderr
    assert run_cli(env, "reindex", "films").returncode == 0
    drain(env)
    db.execute("INSERT INTO film_actor VALUES (1, 1, 'extra'), (2, 1, 'extra') ON CONFLICT DO NOTHING")
    db.execute("DELETE FROM film_actor WHERE film_id = 3")
    drain(env)
    assert_index_matches(db, emulator, "films_cast", "films")
    assert emulator.records("films")["3"]["actor_ids"] == []


def test_ddl_on_a_composite_key_and_an_over_long_key_part(db, env, emulator):
    db.execute(CAST)
    assert run_cli(env, "watch", "film_actor", "--index", "cast", "--attributes", "role").returncode == 0
    db.execute(CAST_ROWS)
    drain(env)
    # Renaming a key column, the table, and widening a key column's type regenerate the capture in
    # the same transaction: the application's next writes work and keep syncing.
    db.execute("ALTER TABLE film_actor RENAME COLUMN film_id TO movie_id")
    db.execute("ALTER TABLE film_actor RENAME TO casting")
    db.execute("ALTER TABLE casting ALTER COLUMN actor_id TYPE bigint")
    db.execute("UPDATE casting SET role = 'renamed' WHERE actor_id = 1")
    db.execute("UPDATE casting SET movie_id = 28 WHERE actor_id = 7 AND movie_id = 2")
    db.execute("DELETE FROM casting WHERE actor_id = 2")
    drain(env)
    roles = dict(db.execute("SELECT ARRAY[actor_id::text, movie_id::text]::text, role FROM casting").fetchall())
    assert {k: r["role"] for k, r in emulator.records("cast").items()} == roles
    # An objectID over Algolia's limit fails its own row, once, and says why; the rest sync.
    db.execute("ALTER TABLE casting DROP CONSTRAINT film_actor_film_id_fkey")
    db.execute("ALTER TABLE casting ALTER COLUMN movie_id TYPE text")
    db.execute("INSERT INTO actors VALUES (99, 'long')")
    db.execute("INSERT INTO casting VALUES (99, repeat('x', 1200), 'long'), (99, 'short', 'ok')")
    drain(env, rows_fail=True)
    failed = db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall()
    assert len(failed) == 1 and "over the 1000-byte limit for an objectID" in failed[0][1], failed
    assert emulator.records("cast")["{99,short}"]["role"] == "ok"
    # Dropping a key column stops the capture, never the application's writes.
    db.execute("ALTER TABLE casting DROP COLUMN movie_id")
    db.execute("INSERT INTO casting (actor_id, role) VALUES (5, 'x')")
    enabled, reason = db.execute("SELECT enabled, disabled_reason FROM algolia_index_config").fetchone()
    assert not enabled and "key column" in reason and "workerpool watch" in reason


def test_a_transform_sees_a_composite_keyed_record_and_may_drop_it(db, env, emulator, tmp_path):
    (tmp_path / "cast_shape.py").write_text(
        "def shape(record):\n"
        "    if record['film_id'] == 3:\n"
        "        return None  # not indexed: deleted\n"
        "    return {**record, 'pair': f\"{record['actor_id']}-{record['film_id']}\", 'oid': record['objectID']}\n"
    )
    env = {**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    db.execute(CAST)
    assert run_cli(env, "watch", "film_actor", "--index", "cast", "--transform", "cast_shape:shape").returncode == 0
    db.execute(CAST_ROWS)
    drain(env)
    records = emulator.records("cast")
    assert records["{1,2}"]["pair"] == "1-2" and records["{1,2}"]["oid"] == "{1,2}"
    expected = {f"{{{a},{f}}}" for a, f in db.execute("SELECT actor_id, film_id FROM film_actor WHERE film_id <> 3")}
    assert set(records) == expected
    assert run_cli(env, "verify", "film_actor").returncode == 0
