"""Capture through the inbox: every statement's keys go into algolia_sync_inbox (cheap for the writer);
workers move them into the queue, where they coalesce with pending rows and keep per-key
serialization exactly as a direct capture did."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid

import psycopg

from testing import assert_index_matches, drain, queue_counts, run_cli
from workerpool.ops.migrate import migrate
from workerpool.runtime import queue


def _inbox(db: psycopg.Connection) -> dict[str, list[str]]:
    """operation -> sorted keys waiting in the inbox."""
    rows = db.execute("SELECT operation, k FROM algolia_sync_inbox, unnest(record_ids) k").fetchall()
    out: dict[str, list[str]] = {}
    for op, key in rows:
        out.setdefault(op, []).append(key)
    return {op: sorted(keys, key=int) for op, keys in out.items()}


def _keys(first: int, last: int) -> list[str]:
    return [str(k) for k in range(first, last + 1)]


def _rows(db: psycopg.Connection) -> list[tuple[str, int]]:
    """(operation, keys) of each inbox row, oldest first."""
    return db.execute("SELECT operation, keys FROM algolia_sync_inbox ORDER BY created_at").fetchall()


def test_every_statement_writes_its_keys_to_the_inbox_in_rows_of_at_most_1000(products):
    db = products
    db.execute("INSERT INTO products (id, name) VALUES (1, 'one')")
    assert _rows(db) == [("INSERT", 1)] and queue_counts(db) == {"inbox": 1}
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(2, 2501) g")
    assert _rows(db)[1:] and sorted(n for _, n in _rows(db)[1:]) == [500, 1000, 1000]
    assert _inbox(db) == {"INSERT": _keys(1, 2501)}
    # A spill takes whole rows, oldest first, until it has max_keys keys (so fewer than max_keys plus
    # one row's 1,000): the 1-key row first, then the bulk statement's rows (in any order).
    spills = [queue.spill(db, 1000) for _ in range(4)]
    assert spills[0] in (1001, 1501) and sum(spills) == 2501 and spills[-1] == 0
    assert all(0 < n < 2000 for n in spills[:-1] if n)
    assert queue_counts(db) == {"pending": 2501}

    db.execute("TRUNCATE algolia_sync_queue")
    # 2,501 rows updated, 150 of them changed: only the changed keys are captured.
    db.execute("UPDATE products SET name = CASE WHEN id <= 150 THEN 'renamed' ELSE name END")
    assert _rows(db) == [("UPDATE", 150)]
    db.execute("UPDATE products SET name = name")  # changes nothing: captures nothing
    db.execute("UPDATE products SET id = 9999 WHERE id = 7")  # a key changes: the old one is deleted
    assert _inbox(db) == {"UPDATE": sorted([*_keys(1, 150), "9999"], key=int), "DELETE": ["7"]}
    db.execute("DELETE FROM products WHERE id > 2400")
    assert _rows(db)[-1] == ("DELETE", 102)  # 2401-2501 and 9999

    db.execute("TRUNCATE algolia_sync_inbox")
    # Over 1,000 changes take the streaming path, an UPDATE that moves keys included.
    db.execute("UPDATE products SET id = id + 100000 WHERE id <= 1200")  # 1,199 rows (7 became 9999)
    assert _inbox(db) == {
        "UPDATE": [k for k in _keys(100001, 101200) if k != "100007"],
        "DELETE": [k for k in _keys(1, 1200) if k != "7"],
    }
    assert all(n <= 1000 for _, n in _rows(db)) and sum(n for _, n in _rows(db)) == 2398

    db.execute("TRUNCATE algolia_sync_inbox")
    db.execute("TRUNCATE products")  # 2,399 rows: every key becomes a delete
    assert queue_counts(db) == {"inbox": 2399} and set(_inbox(db)) == {"DELETE"}
    assert max(n for _, n in _rows(db)) == 1000


def test_spill_coalesces_with_pending_rows_and_waits_for_live_claims(products):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 3) g")
    assert queue.spill(db, 1000) == 3 and queue_counts(db) == {"pending": 3}
    token = uuid.uuid4()
    claimed = db.execute("SELECT record_id FROM get_pending_algolia_syncs(1, 60000, %s, 'test')", (token,)).fetchall()
    assert claimed == [("1",)]  # key 1 is being processed; keys 2 and 3 are pending
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(4, 200) g")
    db.execute("UPDATE products SET stock = 7")  # keys 1-200
    for n in range(5):
        db.execute("UPDATE products SET stock = %s WHERE id = 2", (n,))  # a hot row: five more inbox rows
    assert len(_rows(db)) == 7 and queue_counts(db) == {"processing": 1, "pending": 2, "inbox": 197 + 200 + 5}

    # Whole inbox rows, oldest first, until 1,000 keys: all seven rows (402 keys) in one call, which
    # writes each of the 200 distinct keys once.
    assert queue.spill(db, 1000) == 200 and _inbox(db) == {}
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
    again = {
        r[0]
        for r in db.execute("SELECT record_id FROM get_pending_algolia_syncs(1000, 60000, %s, 'test')", (uuid.uuid4(),))
    }
    assert len(again) == 199 and "1" not in again


def test_a_pending_reindex_stays_a_reindex_when_a_change_merges_into_it(products, env):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 5) g")
    db.execute("TRUNCATE algolia_sync_inbox")
    assert run_cli(env, "reindex", "products").returncode == 0  # REINDEX rows: replace whole
    db.execute("UPDATE products SET stock = 1 WHERE id = 3")
    assert queue.spill(db, 1000) == 1
    ops = dict(db.execute("SELECT record_id, operation FROM algolia_sync_queue").fetchall())
    assert ops == {str(k): "REINDEX" for k in range(1, 6)}


def test_spill_gives_way_to_an_open_transaction_instead_of_blocking_it(products, db_url):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 200) g")
    with psycopg.connect(db_url) as other:  # e.g. a reindex chunk: an uncommitted pending row of key 150
        other.execute(
            "INSERT INTO algolia_sync_queue (table_name, record_id, operation) VALUES ('products', '150', 'REINDEX')"
        )
        started = time.monotonic()
        assert queue.spill(db, 1000) is None  # waited on that row at most lock_timeout, then gave up
        assert time.monotonic() - started < 5
        assert queue_counts(db) == {"inbox": 200}  # nothing half-moved
        other.execute(
            "INSERT INTO algolia_sync_queue (table_name, record_id, operation) VALUES ('products', '151', 'REINDEX')"
        )  # not blocked by the spill either
        other.commit()
    assert queue.spill(db, 1000) == 200  # keys 150 and 151 merged into the committed rows
    assert queue_counts(db) == {"pending": 200}


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
                    conn.execute(
                        "UPDATE products SET stock = stock + 1, name = %s WHERE id BETWEEN %s AND %s",
                        (f"w{n}-{round_}", lo, lo + 400),
                    )
                    conn.execute("UPDATE products SET stock = stock + 1 WHERE id = %s", (lo + 3,))
                    if round_ % 5 == 4:
                        conn.execute("DELETE FROM products WHERE id BETWEEN %s AND %s", (lo + 100, lo + 230))
                        conn.execute(
                            "INSERT INTO products (id, name) SELECT g, 'back' FROM generate_series(%s::int, %s::int) g "
                            "ON CONFLICT (id) DO NOTHING",
                            (lo + 100, lo + 230),
                        )
        except BaseException as exc:
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


def _watch_as_version_3_did(conn: psycopg.Connection) -> None:
    """`watch items --attributes name` as the code of schema version 3 registered it."""
    conn.execute("""INSERT INTO algolia_index_config (table_name, index_name, key_column, key_type, attributes)
                    VALUES ('items', 'items', 'id', 'integer', '{name}')""")
    fn = conn.execute(
        "SELECT algolia_sync_create_capture(%s, 'items', 'id', '{id,name}')",
        ("algolia_sync_capture_" + hashlib.md5(b"items").hexdigest()[:16],),
    ).fetchone()[0]
    for name, when in (
        ("insert", "AFTER INSERT ON items REFERENCING NEW TABLE AS new_rows"),
        ("update", "AFTER UPDATE ON items REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"),
        ("delete", "AFTER DELETE ON items REFERENCING OLD TABLE AS old_rows"),
        ("truncate", "BEFORE TRUNCATE ON items"),
    ):
        conn.execute(f"CREATE TRIGGER algolia_sync_{name} {when} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")


def test_upgrading_to_version_4_moves_existing_watches_to_the_inbox(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate(conn, target=3)
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, secret text)")
        _watch_as_version_3_did(conn)
        conn.execute("INSERT INTO items VALUES (1, 'n', 's')")  # version 3: straight into the queue
        migrate(conn)
        assert queue_counts(conn) == {"pending": 1}
        conn.execute("INSERT INTO items SELECT g, 'n', 's' FROM generate_series(2, 300) g")
        assert queue_counts(conn) == {"pending": 1, "inbox": 299}
        # The regenerated function still compares only the record's columns.
        conn.execute("UPDATE items SET secret = 'changed'")
        assert queue_counts(conn) == {"pending": 1, "inbox": 299}
        conn.execute("UPDATE items SET name = 'changed' WHERE id <= 150")
        assert queue_counts(conn) == {"pending": 1, "inbox": 449}
