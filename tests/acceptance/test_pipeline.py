"""The core pipeline end to end: a watched table, `workerpool run`, and the emulator's index."""

from __future__ import annotations

import random
import re
import signal
import threading
import time

import psycopg
import pytest

from testing import (
    API_KEY,
    assert_index_matches,
    drain,
    queue_counts,
    run_cli,
    spill_all,
    wait_until,
)
from workerpool.runtime import queue


def test_insert_update_delete_and_reinsert_reach_the_index(products, env, emulator):
    db = products
    db.execute(
        "INSERT INTO products (id, name, price, tags, attrs) VALUES "
        "(1, 'chair', 19.99, '{wood,oak}', '{\"color\": \"red\"}'), (2, 'table', 120, NULL, NULL), "
        "(3, 'lamp', 7.5, '{}', '{}')"
    )
    drain(env)
    assert emulator.records("products")["1"]["name"] == "chair"
    assert emulator.records("products")["1"]["price"] == 19.99
    assert_index_matches(db, emulator, "products", "products")

    db.execute("UPDATE products SET name = 'armchair', stock = 4 WHERE id = 1")
    db.execute("DELETE FROM products WHERE id = 2")
    drain(env)
    index = emulator.records("products")
    assert index["1"]["name"] == "armchair" and index["1"]["stock"] == 4
    assert "2" not in index
    assert_index_matches(db, emulator, "products", "products")

    db.execute("INSERT INTO products (id, name) VALUES (2, 'table, again')")
    db.execute("UPDATE products SET price = price * 2")  # a multi-row UPDATE
    drain(env)
    assert emulator.records("products")["2"]["name"] == "table, again"
    assert emulator.records("products")["3"]["price"] == 15
    assert_index_matches(db, emulator, "products", "products")
    # Every sync was logged, set-wise, with the action taken.
    actions = dict(db.execute("SELECT action, count(*) FROM algolia_sync_log GROUP BY action").fetchall())
    # Every write is a version-guarded partial update, the first ones included (3 new + 1 update + 1
    # delete, then re-inserted key 2 and keys 1 and 3); only a changed attribute set replaces whole.
    assert actions == {"partialUpdateObject": 7, "deleteObject": 1}


def test_bulk_insert_of_10000_rows_is_enqueued_setwise_and_synced(products, env, emulator):
    db = products
    db.execute(
        "INSERT INTO products (name, price, stock) "
        "SELECT 'item ' || g, g / 100.0, g % 17 FROM generate_series(1, 10000) g"
    )
    # A bulk statement writes its keys into the inbox, 1,000 per row, not 10,000 queue rows; they
    # still count as pending.
    assert queue_counts(db) == {"inbox": 10000}
    assert db.execute(
        "SELECT count(*), count(DISTINCT k) FROM algolia_sync_inbox, unnest(record_ids) k"
    ).fetchone() == (10000, 10000)
    assert db.execute("SELECT count(*) FROM algolia_sync_inbox").fetchone()[0] == 10
    assert db.execute("SELECT pending FROM algolia_sync_stats").fetchone()[0] == 10000
    result = drain(env, "--batch-size", "1000", "--workers", "2")
    assert db.execute("SELECT count(*) FROM algolia_sync_inbox").fetchone()[0] == 0
    assert queue_counts(db) == {}
    assert_index_matches(db, emulator, "products", "products")
    assert emulator.stats()["record_writes"]["products"] == 10000
    batches = [e for e in _events(result.stdout) if e.get("action") == "batch_synced"]
    assert sum(e["upserts"] for e in batches) == 10000
    assert max(e["batch"] for e in batches) == 1000


def test_a_deep_backlog_drains_in_fewer_larger_requests_counted_in_metrics(products, env, emulator, start_pool):
    """While claims come back full the claim size doubles from BATCH_SIZE up to BATCH_SIZE_MAX, and every
    batch request is counted in /metrics; with BATCH_SIZE_MAX = BATCH_SIZE claims stay at BATCH_SIZE."""
    import socket
    import urllib.request

    db = products
    db.execute("INSERT INTO products (name) SELECT 'item ' || g FROM generate_series(1, 3000) g")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pool = start_pool("--batch-size", "100", extra_env={"HEALTH_PORT": str(port)})
    wait_until(lambda: not queue_counts(db), timeout=120, message="the backlog to drain")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        scraped = response.read().decode()
    assert pool.stop() == 0
    batches = [e for e in _events(pool.output) if e.get("action") == "batch_synced"]
    sizes = [e["batch"] for e in batches]
    assert sum(sizes) == 3000 and sizes[0] == 100 and max(sizes) == 1000, sizes
    assert max(e["batch_limit"] for e in batches) == 1000
    grown = emulator.stats()["batch_requests"]
    assert grown <= 10, f"{grown} requests for 3000 records: claims did not grow ({sizes})"
    accepted = re.search(r'^workerpool_algolia_requests_total\{outcome="accepted"\} (\S+)$', scraped, re.M)
    assert accepted and float(accepted.group(1)) == grown, scraped
    assert_index_matches(db, emulator, "products", "products")

    db.execute("UPDATE products SET name = name || '!'")
    result = drain(env, "--batch-size", "100", extra_env={"BATCH_SIZE_MAX": "100"})
    sizes = [e["batch"] for e in _events(result.stdout) if e.get("action") == "batch_synced"]
    assert sum(sizes) == 3000 and max(sizes) == 100, sizes
    assert emulator.stats()["batch_requests"] - grown == 30
    assert_index_matches(db, emulator, "products", "products")


def test_truncate_deletes_every_record(products, env, emulator):
    db = products
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 50) g")
    drain(env)
    assert len(emulator.records("products")) == 50
    db.execute("TRUNCATE products")
    assert queue_counts(db) == {"inbox": 50}
    drain(env)
    assert emulator.records("products") == {}


def test_text_primary_key_and_quoted_table_name(db, env, emulator):
    db.execute('CREATE TABLE "Order Items" (sku text PRIMARY KEY, qty integer NOT NULL, note text)')
    result = run_cli(env, "watch", "Order Items", "--index", "order_items")
    assert result.returncode == 0, result.stderr
    db.execute(
        """INSERT INTO "Order Items" VALUES ('A-1', 3, NULL), ('b/2 é', 1, 'unicode key'), ('42', 7, 'digits')"""
    )
    db.execute("""UPDATE "Order Items" SET qty = qty + 1 WHERE sku = 'A-1'""")
    drain(env)
    index = emulator.records("order_items")
    assert set(index) == {"A-1", "b/2 é", "42"}
    assert index["42"]["objectID"] == "42"  # always a string, even when the key looks numeric
    assert_index_matches(db, emulator, '"Order Items"', "order_items", key="sku")


def test_hostile_table_name_is_refused_cleanly(db, env):
    db.execute("CREATE TABLE x (id int PRIMARY KEY)")
    result = run_cli(env, "watch", '"; drop table x; --', "--index", "evil")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    assert db.execute("SELECT to_regclass('x') IS NOT NULL").fetchone()[0]
    assert db.execute("SELECT count(*) FROM algolia_index_config").fetchone()[0] == 0


def test_a_key_that_is_not_unique_is_refused(db, env):
    db.execute("CREATE TABLE events (id int PRIMARY KEY, sku text)")
    result = run_cli(env, "watch", "events", "--index", "events", "--key", "sku")
    assert result.returncode == 2 and "--key 'sku' is not unique in events" in result.stderr
    db.execute("CREATE UNIQUE INDEX ON events (sku)")
    assert run_cli(env, "watch", "events", "--index", "events", "--key", "sku").returncode == 0


def test_postgres_types_map_to_json_deliberately(db, env, emulator):
    db.execute("""CREATE TABLE typed (
        id uuid PRIMARY KEY, n numeric, big numeric, whole numeric, ts timestamptz, d date,
        j jsonb, arr integer[], nothing text, flag boolean, raw bytea)""")
    assert run_cli(env, "watch", "typed", "--index", "typed").returncode == 0
    db.execute("""INSERT INTO typed VALUES ('6f1c8d0e-2f5a-4c33-9a4e-1d2b3c4d5e6f', 19.99,
        12345678901234567890.123456789, 100, '2026-01-02 03:04:05+00', '2026-01-02',
        '{"a": [1, 2, {"b": null}]}', '{1,2,3}', NULL, true, '\\x0102')""")
    drain(env)
    record = emulator.records("typed")["6f1c8d0e-2f5a-4c33-9a4e-1d2b3c4d5e6f"]
    assert isinstance(record.pop("_version"), int)
    assert record == {
        "objectID": "6f1c8d0e-2f5a-4c33-9a4e-1d2b3c4d5e6f",
        "id": "6f1c8d0e-2f5a-4c33-9a4e-1d2b3c4d5e6f",
        "n": 19.99,
        "big": "12345678901234567890.123456789",  # beyond float precision: a string, no digit lost
        "whole": 100,
        "ts": "2026-01-02T03:04:05+00:00",
        "d": "2026-01-02",
        "j": {"a": [1, 2, {"b": None}]},
        "arr": [1, 2, 3],
        "nothing": None,
        "flag": True,
        "raw": "AQI=",
    }


def test_hundred_updates_to_one_row_cost_one_queue_row_and_one_write(products, env, emulator):
    db = products
    db.execute("INSERT INTO products (id, name) VALUES (1, 'v0')")
    for i in range(1, 101):
        db.execute("UPDATE products SET name = %s WHERE id = 1", (f"v{i}",))
    # 101 statements leave 101 keys in the inbox (cheap for the writer); moved into the queue, they
    # coalesce into one pending row.
    assert queue_counts(db) == {"inbox": 101}
    db.execute("UPDATE products SET name = name WHERE id = 1")  # changes nothing: captures nothing
    assert queue_counts(db) == {"inbox": 101}
    assert queue.spill(db, 1000) == 1 and queue_counts(db) == {"pending": 1}
    drain(env)
    assert emulator.stats()["record_writes"]["products"] == 1
    assert emulator.records("products")["1"]["name"] == "v100"


def test_two_workers_and_four_writers_converge(products, env, emulator, start_pool):
    db = products
    db.execute("INSERT INTO products (id, name, stock) SELECT g, 'p' || g, 0 FROM generate_series(1, 200) g")
    pool = start_pool("--workers", "2", "--batch-size", "50")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                while not stop.is_set():
                    key = rng.randint(1, 250)
                    choice = rng.random()
                    if choice < 0.6:
                        conn.execute(
                            "UPDATE products SET stock = stock + 1, name = %s WHERE id = %s",
                            (f"w{seed}-{rng.random():.6f}", key),
                        )
                    elif choice < 0.8:
                        conn.execute("DELETE FROM products WHERE id = %s", (key,))
                    else:
                        conn.execute(
                            "INSERT INTO products (id, name) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE "
                            "SET name = EXCLUDED.name",
                            (key, f"ins{seed}"),
                        )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(6)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    wait_until(lambda: not queue_counts(db), timeout=60, message="the queue to drain")
    assert pool.stop() == 0
    assert_index_matches(db, emulator, "products", "products")
    synced = pool.lines("batch_synced")
    assert {e["worker"] for e in synced} == {1, 2}, "both workers took part"


def test_sigkilled_worker_is_restarted_and_its_claim_recovered(products, env, emulator, start_pool):
    db = products
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 300) g")
    emulator.inject_fault(latency_ms=3000, count=1)  # hold the first batch in flight, and only that one
    # The lease is long enough that the replacement's own claim of the recovered rows cannot expire
    # too on a loaded machine (that would count a third attempt).
    pool = start_pool("--batch-size", "300", extra_env={"LEASE_TIMEOUT": "6000"})
    wait_until(lambda: queue_counts(db).get("processing") == 300, message="the batch to be claimed")
    # Killed once its request is held in the emulator: killed before sending, the worker would leave
    # the held answer to its replacement, whose client times out and counts a third attempt.
    wait_until(lambda: emulator.stats()["faults_pending"] == 0, message="the batch's request to be in flight")
    [victim] = pool.worker_pids()
    import os

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: pool.lines("worker_died"), message="the supervisor to notice")
    wait_until(lambda: [p for p in pool.worker_pids() if p != victim], timeout=20, message="a replacement worker")
    wait_until(lambda: not queue_counts(db), timeout=40, message="the lost claim to be recovered and synced")
    assert pool.stop() == 0
    assert pool.lines("worker_died")[0]["signal"] == "SIGKILL"
    assert_index_matches(db, emulator, "products", "products")
    attempts = db.execute("SELECT max(attempts) FROM algolia_sync_log").fetchone()[0]
    assert attempts == 2, "the recovered rows were claimed a second time"


def test_sigterm_under_load_exits_zero_and_leaves_no_child(products, env, emulator, start_pool):
    db = products
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 20000) g")
    emulator.inject_fault(latency_ms=50, seconds=60)
    pool = start_pool(
        "--workers", "2", "--batch-size", "200", extra_env={"SHUTDOWN_TIMEOUT": "8000", "BATCH_SIZE_MAX": "200"}
    )
    wait_until(lambda: len(pool.lines("batch_synced")) >= 2, message="work to be under way")
    children = pool.worker_pids()
    assert len(children) == 2
    started = time.monotonic()
    code = pool.stop(signal.SIGTERM, timeout=20)
    elapsed = time.monotonic() - started
    assert code == 0
    assert elapsed < 8 + 2, f"stopped in {elapsed:.1f}s, over SHUTDOWN_TIMEOUT"
    for pid in children:
        with pytest.raises(ProcessLookupError):
            import os

            os.kill(pid, 0)
    # Nothing stays claimed: in-flight batches were finished or released.
    assert queue_counts(db).get("processing", 0) == 0
    assert pool.lines("stopping") and pool.lines("supervisor_stopped")


def test_migrate_is_idempotent_and_safe_concurrently(empty_db_url, env):
    import subprocess

    env = {**env, "DATABASE_URL": empty_db_url}
    from testing import workerpool_cmd

    procs = [
        subprocess.Popen(workerpool_cmd("migrate"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(*p.communicate(timeout=60), p.returncode) for p in procs]
    assert [r[2] for r in results] == [0, 0], results
    summaries = sorted(r[0].strip().splitlines()[-1] for r in results)
    # Exactly one of the two applied the migrations; the other waited on the lock and found them done.
    from workerpool.ops.migrate import migrations

    total = len(migrations())
    assert summaries == [
        "schema up to date (0 migration(s) applied)",
        f"schema up to date ({total} migration(s) applied)",
    ]
    again = run_cli(env, "migrate")
    assert again.returncode == 0 and "(0 migration(s) applied)" in again.stdout
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE products (id int PRIMARY KEY, name text)")
        assert run_cli(env, "watch", "products", "--index", "p").returncode == 0
        conn.execute("INSERT INTO products VALUES (1, 'a')")
        stats = conn.execute("SELECT * FROM algolia_sync_stats").fetchall()
        assert stats[0][0:5] == ("products", "p", 1, 0, 0)  # waiting in the inbox: pending
        spill_all(conn)
        conn.execute("UPDATE algolia_sync_queue SET status = 'failed', last_error = 'x'")
        # The seed's four monitoring queries.
        stats = conn.execute("SELECT * FROM algolia_sync_stats").fetchall()
        assert stats[0][0:5] == ("products", "p", 0, 0, 1)
        conn.execute("SELECT * FROM algolia_sync_log ORDER BY synced_at DESC LIMIT 100").fetchall()
        failed = conn.execute(
            "SELECT * FROM algolia_sync_queue WHERE status = 'failed' ORDER BY created_at DESC"
        ).fetchall()
        assert len(failed) == 1
        assert conn.execute("SELECT cleanup_old_sync_records(7)").fetchone()[0] == 0


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"BATCH_SIZE": "abc"}, "BATCH_SIZE='abc'"),
        ({"ALGOLIA_APP_ID": ""}, "ALGOLIA_APP_ID is not set"),
        ({"DATABASE_URL": "postgresql://wp:hunter2secret@127.0.0.1:1/none"}, "cannot connect to DATABASE_URL"),
        ({"WORKERS": "0"}, "WORKERS='0'"),
    ],
)
def test_bad_configuration_exits_2_with_one_clear_line(env, change, needle):
    result = run_cli({**env, **change}, "run", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert API_KEY not in result.stderr and "hunter2secret" not in result.stderr


def _events(text: str) -> list[dict]:
    import orjson

    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
