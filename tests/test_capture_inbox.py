"""Bulk capture: statements over 100 rows write their keys into the inbox, workers move them into the
queue, where they coalesce with pending rows and keep per-key serialization like any direct capture."""

from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest

from conftest import assert_index_matches, drain, queue_counts, run_cli
from workerpool import queue
from workerpool.migrate import migrate


def _inbox(db: psycopg.Connection) -> dict[str, list[str]]:
    """operation -> sorted keys waiting in the inbox."""
    rows = db.execute("SELECT operation, k FROM algolia_sync_inbox, unnest(record_ids) k").fetchall()
    out: dict[str, list[str]] = {}
    for op, key in rows:
        out.setdefault(op, []).append(key)
    return {op: sorted(keys, key=int) for op, keys in out.items()}


def _keys(first: int, last: int) -> list[str]:
    return [str(k) for k in range(first, last + 1)]


def test_statements_over_100_rows_go_to_the_inbox_and_smaller_ones_to_the_queue(products):
    db = products
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 100) g")
    assert queue_counts(db) == {"pending": 100} and _inbox(db) == {}
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(101, 301) g")
    assert queue_counts(db) == {"pending": 100, "inbox": 201} and _inbox(db) == {"INSERT": _keys(101, 301)}

    db.execute("TRUNCATE algolia_sync_queue, algolia_sync_inbox")
    # 301 rows updated, 150 of them changed: only the changed keys are captured.
    db.execute("UPDATE products SET name = CASE WHEN id <= 150 THEN 'renamed' ELSE name END")
    assert queue_counts(db) == {"inbox": 150} and _inbox(db) == {"UPDATE": _keys(1, 150)}
    db.execute("DELETE FROM products WHERE id > 190")  # 111 rows
    assert _inbox(db) == {"UPDATE": _keys(1, 150), "DELETE": _keys(191, 301)}
    db.execute("DELETE FROM products WHERE id > 180")  # 10 rows: direct
    assert queue_counts(db) == {"pending": 10, "inbox": 150 + 111}

    db.execute("TRUNCATE algolia_sync_queue, algolia_sync_inbox")
    db.execute("TRUNCATE products")  # 180 rows
    assert queue_counts(db) == {"inbox": 180} and _inbox(db) == {"DELETE": _keys(1, 180)}


def test_spill_coalesces_with_pending_rows_and_waits_for_live_claims(products):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 3) g")
    token = uuid.uuid4()
    claimed = db.execute("SELECT record_id FROM get_pending_algolia_syncs(1, 60000, %s, 'test')", (token,)).fetchall()
    assert claimed == [("1",)]  # key 1 is being processed; keys 2 and 3 are pending
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(4, 200) g")
    db.execute("UPDATE products SET stock = 7")  # 200 rows: keys 1-200 go to the inbox as UPDATE
    assert sorted(_inbox(db)) == ["INSERT", "UPDATE"] and queue_counts(db) == {"processing": 1, "pending": 2, "inbox": 197 + 200}

    spilled = []
    while n := queue.spill(db, 1000):  # one inbox row (up to 1,000 keys) per call, oldest first
        spilled.append(n)
    assert spilled == [197, 200] and _inbox(db) == {}  # the INSERTed keys, then every key's UPDATE
    # One pending row per key (the inbox's keys 2 and 3 merged into their pending rows, with the latest
    # operation), and key 1 pending again behind its live claim.
    rows = db.execute("SELECT record_id, status, operation FROM algolia_sync_queue ORDER BY id").fetchall()
    assert len(rows) == 201
    by_key: dict[str, list[tuple[str, str]]] = {}
    for key, status, op in rows:
        by_key.setdefault(key, []).append((status, op))
    assert by_key["1"] == [("processing", "INSERT"), ("pending", "UPDATE")]
    assert all(v == [("pending", "UPDATE")] for k, v in by_key.items() if k != "1")
    # The claim never takes key 1 while its claim lives.
    again = {r[0] for r in db.execute("SELECT record_id FROM get_pending_algolia_syncs(1000, 60000, %s, 'test')",
                                      (uuid.uuid4(),))}
    assert len(again) == 199 and "1" not in again


def test_spill_gives_way_to_a_writer_instead_of_blocking_it(products, db_url):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 200) g")  # inbox
    assert len(_inbox(db)["INSERT"]) == 200
    with psycopg.connect(db_url) as writer:  # a transaction that stays open
        writer.execute("UPDATE products SET stock = 1 WHERE id = 150")  # key 150: pending, uncommitted
        started = time.monotonic()
        assert queue.spill(db, 1000) is None  # waited on the writer's row at most lock_timeout, then gave up
        assert time.monotonic() - started < 5
        assert queue_counts(db) == {"inbox": 200}  # nothing half-moved
        # The writer was not blocked by the spill: it goes on and commits.
        writer.execute("UPDATE products SET stock = 2 WHERE id = 151")
        writer.commit()
    assert queue.spill(db, 1000) == 200 - 2 + 2  # keys 150 and 151 merged into their pending rows
    assert queue_counts(db) == {"pending": 200} and _inbox(db) == {}


def test_concurrent_bulk_writes_and_workers_converge(products, env, emulator, start_pool):
    db = products
    db.execute("INSERT INTO products (name, stock) SELECT 'p' || g, 0 FROM generate_series(1, 3000) g")
    pool = start_pool("--workers", "2", "--batch-size", "200")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                for round_ in range(15):
                    lo = (n * 700 + round_ * 97) % 2500
                    conn.execute("UPDATE products SET stock = stock + 1, name = %s WHERE id BETWEEN %s AND %s",
                                 (f"w{n}-{round_}", lo, lo + 400))
                    conn.execute("UPDATE products SET stock = stock + 1 WHERE id = %s", (lo + 3,))
                    if round_ % 5 == 4:
                        conn.execute("DELETE FROM products WHERE id BETWEEN %s AND %s", (lo + 100, lo + 230))
                        conn.execute("INSERT INTO products (id, name) SELECT g, 'back' FROM generate_series(%s::int, %s::int) g "
                                     "ON CONFLICT (id) DO NOTHING", (lo + 100, lo + 230))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors  # no writer's statement failed because of the capture or a spill
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not db.execute("SELECT algolia_sync_idle()").fetchone()[0]:
        time.sleep(0.2)
    assert db.execute("SELECT algolia_sync_idle()").fetchone()[0]
    pool.stop()
    assert_index_matches(db, emulator, "products", "products")


def test_inbox_keys_show_in_stats_and_drain_waits_for_them(products, env, emulator):
    db = products
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 500) g")
    stats = json.loads(run_cli(env, "stats", "--json").stdout)
    row = stats[0] if isinstance(stats, list) else stats["tables"][0]
    assert row["pending"] == 500
    drain(env)  # `run --drain` stops only once the inbox is empty too
    assert_index_matches(db, emulator, "products", "products")
    assert db.execute("SELECT count(*) FROM algolia_sync_inbox").fetchone()[0] == 0


def test_upgrading_to_version_4_moves_existing_watches_to_the_inbox(empty_db_url, env):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate(conn, target=3)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, secret text)")
        from workerpool.capture import watch
        watch(conn, "items", "items", attributes=["name"])
        migrate(conn)
        conn.execute("INSERT INTO items SELECT g, 'n', 's' FROM generate_series(1, 300) g")
        assert conn.execute("SELECT sum(cardinality(record_ids)) FROM algolia_sync_inbox").fetchone()[0] == 300
        # The regenerated function still compares only the record's columns.
        conn.execute("UPDATE items SET secret = 'changed'")
        assert conn.execute("SELECT sum(cardinality(record_ids)) FROM algolia_sync_inbox").fetchone()[0] == 300
        conn.execute("UPDATE items SET name = 'changed' WHERE id <= 150")
        assert conn.execute("SELECT sum(cardinality(record_ids)) FROM algolia_sync_inbox").fetchone()[0] == 450
