"""Operations: stats, retry-failed, cleanup, reindex (plain and atomic), verify, /healthz and /metrics.

Real Postgres, the emulator over real HTTP, `workerpool` run as a subprocess: no mocks.
"""

from __future__ import annotations

import io
import json
import random
import re
import signal
import socket
import subprocess
import threading
import time

import orjson
import psycopg
import pytest

from testing import (
    API_KEY,
    APP_ID,
    PRODUCTS,
    assert_index_matches,
    drain,
    queue_counts,
    run_cli,
    spill_all,
    wait_until,
    workerpool_cmd,
)
from testing.http import free_port, http_get, prometheus_sample
from workerpool.emulator import make_client


def _insert(db: psycopg.Connection, first: int, last: int) -> None:
    db.execute(
        "INSERT INTO products (id, name, price, stock) "
        "SELECT g, 'item ' || g, g * 1.25, g %% 7 FROM generate_series(%s::int, %s::int) g",
        (first, last),
    )


def _client(emulator):
    return make_client(emulator.url, APP_ID, API_KEY)


# ---- stats, retry-failed, cleanup ------------------------------------------------------------


def test_stats_json_reports_real_counts_ages_and_rates(products, env, emulator):
    db = products
    _insert(db, 1, 30)
    spill_all(db)  # as a worker would, so that some rows can be made to fail
    db.execute("UPDATE algolia_sync_queue SET status = 'failed', last_error = 'boom' WHERE record_id IN ('1', '2')")
    db.execute("UPDATE algolia_sync_queue SET created_at = now() - interval '90 seconds' WHERE record_id = '3'")
    result = run_cli(env, "stats", "--json")
    assert result.returncode == 0, result.stderr
    [row] = orjson.loads(result.stdout)["tables"]
    assert (row["table_name"], row["index_name"]) == ("products", "products")
    assert (row["pending"], row["processing"], row["failed"]) == (28, 0, 2)
    assert 89 <= row["oldest_pending_age_s"] < 150
    assert row["completed_last_hour"] == 0 and row["success_rate_pct"] is None

    drain(env)
    data = orjson.loads(run_cli(env, "stats", "--json").stdout)
    [row] = data["tables"]
    assert (row["pending"], row["failed"], row["completed_last_hour"]) == (0, 2, 28)
    assert row["success_rate_pct"] == 100.0
    assert row["records_per_s_last_minute"] == pytest.approx(28 / 60, abs=0.01)
    text = run_cli(env, "stats").stdout
    assert "products" in text and "live worker(s)" in text


def test_stats_watch_refreshes_until_interrupted(products, env):
    _insert(products, 1, 3)
    proc = subprocess.Popen(
        workerpool_cmd("stats", "--watch", "--interval", "0.3"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 30
    while seen.count("Ctrl-C to stop") < 3 and time.monotonic() < deadline:  # wait for refreshes, not a clock
        seen += proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    out = seen + out
    assert proc.returncode == 0, err
    refreshes = out.count("Ctrl-C to stop")
    assert refreshes >= 3, out
    assert out.count("products") >= refreshes  # each refresh shows the table
    # --json --watch: one JSON document per line.
    proc = subprocess.Popen(
        workerpool_cmd("stats", "--watch", "--json", "--interval", "0.3"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = [proc.stdout.readline(), proc.stdout.readline()]
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    docs = [orjson.loads(line) for line in [*first, *out.splitlines()] if line.strip()]
    assert len(docs) >= 2 and all(d["tables"][0]["pending"] == 3 for d in docs)


def test_retry_failed_returns_failed_rows_per_table(products, env, emulator):
    db = products
    db.execute("CREATE TABLE brands (id integer PRIMARY KEY, name text)")
    assert run_cli(env, "watch", "brands", "--index", "brands").returncode == 0
    _insert(db, 1, 5)
    db.execute("INSERT INTO brands VALUES (1, 'acme'), (2, 'globex')")
    spill_all(db)
    db.execute("UPDATE algolia_sync_queue SET status = 'failed', attempts = 5, last_error = 'x'")
    result = run_cli(env, "retry-failed", "--table", "brands")
    assert result.returncode == 0 and "returned 2 failed row(s)" in result.stdout, result.stdout
    counts = dict(
        db.execute("SELECT table_name || ':' || status, count(*) FROM algolia_sync_queue GROUP BY 1").fetchall()
    )
    assert counts == {"brands:pending": 2, "products:failed": 5}
    assert db.execute("SELECT max(attempts) FROM algolia_sync_queue WHERE table_name = 'brands'").fetchone()[0] == 0
    result = run_cli(env, "retry-failed")
    assert "returned 5 failed row(s)" in result.stdout
    drain(env)
    assert_index_matches(db, emulator, "products", "products")
    assert_index_matches(db, emulator, "brands", "brands")


def test_cleanup_deletes_only_old_log_rows(products, env):
    db = products
    _insert(db, 1, 3)
    drain(env)
    # The log is written per acknowledgement call: the calls that synced 1 to 3 become 10 days old.
    db.execute("UPDATE algolia_sync_log_batches SET synced_at = now() - interval '10 days'")
    _insert(db, 4, 4)
    drain(env)
    result = run_cli(env, "cleanup", "--days", "7")
    assert result.returncode == 0 and "deleted 3 row(s) older than 7 day(s)" in result.stdout, result.stdout
    assert [r[0] for r in db.execute("SELECT record_id FROM algolia_sync_log")] == ["4"]
    bad = run_cli(env, "cleanup", "--days", "-1")
    assert bad.returncode == 2 and "negative" in bad.stderr


# ---- reindex ---------------------------------------------------------------------------------


class _InterruptAfter(io.StringIO):
    """A progress stream that raises KeyboardInterrupt on its n-th write (a Ctrl-C mid-run)."""

    def __init__(self, writes: int) -> None:
        super().__init__()
        self.left = writes

    def write(self, text: str) -> int:
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt
        return super().write(text)


def test_reindex_enqueues_every_row_in_chunks_and_resumes_after_an_interruption(db, env, emulator):
    from workerpool import config
    from workerpool.ops.reindex import reindex

    db.execute(PRODUCTS)
    _insert(db, 1, 1000)  # before the trigger exists: nothing queued, the index is empty
    assert run_cli(env, "watch", "products", "--index", "products").returncode == 0
    assert queue_counts(db) == {}
    settings = config.load(environ=env, env_file=None)

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn, pytest.raises(KeyboardInterrupt):
        reindex(settings, conn, "products", chunk_size=100, stream=_InterruptAfter(4))
    done, last_key = db.execute("SELECT rows_done, last_key FROM workerpool_reindex_progress").fetchone()
    assert 0 < done < 1000 and int(last_key) == done
    assert queue_counts(db) == {"pending": done}

    db.execute("UPDATE products SET name = 'changed' WHERE id = 999")  # a pending row that must not be duplicated
    spill_all(db)
    result = run_cli(env, "reindex", "products", "--chunk-size", "100")
    assert result.returncode == 0, result.stderr
    assert "(resumed)" in result.stdout and f"{1000 - done} row(s) walked" in result.stdout, result.stdout
    assert "1 already pending" in result.stdout
    assert "100.0%" in result.stderr and "1,000/1,000 rows" in result.stderr  # the progress bar, on stderr
    assert "ETA" in result.stderr
    ops = dict(db.execute("SELECT operation, count(*) FROM algolia_sync_queue GROUP BY 1").fetchall())
    assert ops == {"REINDEX": 999, "UPDATE": 1}
    assert db.execute("SELECT count(DISTINCT record_id) FROM algolia_sync_queue").fetchone()[0] == 1000
    assert db.execute("SELECT count(*) FROM workerpool_reindex_progress").fetchone()[0] == 0  # finished: progress gone

    drain(env, "--batch-size", "500")
    assert_index_matches(db, emulator, "products", "products")
    # A table that is not watched is refused with one line.
    bad = run_cli(env, "reindex", "nope")
    assert bad.returncode == 2 and "not watched" in bad.stderr


def _writers(dsn: str, stop: threading.Event, errors: list, count: int = 3, keys: int = 3500) -> list[threading.Thread]:
    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while not stop.is_set():
                    key = rng.randint(1, keys)
                    choice = rng.random()
                    if choice < 0.6:
                        conn.execute(
                            "UPDATE products SET stock = stock + 1, name = %s, updated_at = now() WHERE id = %s",
                            (f"w{seed}-{rng.random():.6f}", key),
                        )
                    elif choice < 0.8:
                        conn.execute("DELETE FROM products WHERE id = %s", (key,))
                    else:
                        conn.execute(
                            "INSERT INTO products (id, name, price) VALUES (%s, %s, 1) ON CONFLICT (id) "
                            "DO UPDATE SET name = EXCLUDED.name",
                            (key, f"ins{seed}"),
                        )
                    time.sleep(0.002)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(count)]
    for t in threads:
        t.start()
    return threads


def test_reindex_atomic_with_writers_running_throughout_keeps_every_change(products, env, emulator, start_pool):
    db = products
    _insert(db, 1, 3000)
    drain(env, "--batch-size", "1000")
    client = _client(emulator)
    client.set_settings("products", {"searchableAttributes": ["name"], "customRanking": ["desc(stock)"]})
    client.save_object("products", {"objectID": "junk-1", "name": "left behind"})  # no row: must disappear
    db.execute("UPDATE algolia_sync_log_batches SET synced_at = now() - interval '1 hour'")  # before T0

    pool = start_pool("--workers", "2", "--batch-size", "50")
    stop = threading.Event()
    errors: list = []
    threads = _writers(env["DATABASE_URL"], stop, errors)
    try:
        time.sleep(0.5)
        emulator.inject_fault(latency_ms=40, writes_only=True)  # make the copy take a few seconds
        started = time.monotonic()
        result = run_cli(env, "reindex", "products", "--atomic", "--chunk-size", "100")
        took = time.monotonic() - started
        emulator.clear_faults()
        time.sleep(1.0)  # writers keep going after the move too
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert result.returncode == 0, result.stdout + result.stderr
    assert took > 1.0, "the copy should overlap the writers for a while"
    match = re.search(
        r"(\d+) record\(s\) written to (products_tmp_\d+), moved over products; (\d+) key\(s\) changed", result.stdout
    )
    assert match, result.stdout
    assert int(match.group(1)) >= 2500
    assert int(match.group(3)) > 0, "writes during the copy must have been re-enqueued"
    assert "100.0%" in result.stderr

    wait_until(lambda: not queue_counts(db), timeout=60, message="the queue to drain")
    assert pool.stop() == 0
    assert_index_matches(db, emulator, "products", "products")
    assert "junk-1" not in emulator.records("products")
    settings = client.get_settings("products")
    assert settings.searchable_attributes == ["name"] and settings.custom_ranking == ["desc(stock)"]
    names = [i.name for i in client.list_indices().items]
    assert names == ["products"], names  # the temporary index was moved, nothing left behind
    assert db.execute("SELECT count(*) FROM workerpool_reindex_progress").fetchone()[0] == 0


# ---- verify ----------------------------------------------------------------------------------


def test_verify_finds_missing_extra_and_stale_records_and_repairs_them(products, env, emulator):
    db = products
    _insert(db, 1, 200)
    drain(env)
    clean = run_cli(env, "verify", "products")
    assert clean.returncode == 0 and "clean" in clean.stdout, clean.stdout + clean.stderr

    # Drift behind the worker's back.
    client = _client(emulator)
    client.delete_object("products", "17")  # missing
    client.partial_update_object("products", "42", {"name": "tampered"})  # stale
    client.save_object("products", {"objectID": "9999", "name": "ghost"})  # extra, a valid key
    client.save_object("products", {"objectID": "not-a-key", "name": "ghost"})  # extra, can never be a row
    db.execute("ALTER TABLE products DISABLE TRIGGER USER")
    db.execute("UPDATE products SET price = 0.5 WHERE id = 105")  # stale: the table moved without a trigger
    db.execute("ALTER TABLE products ENABLE TRIGGER USER")

    result = run_cli(env, "verify", "products", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert (report["rows"], report["records"]) == (200, 201)
    assert (report["missing"], report["extra"], report["stale"], report["drift"]) == (1, 2, 2, 5)
    assert report["samples"] == {"missing": ["17"], "extra": ["9999", "not-a-key"], "stale": ["42", "105"]}
    text = run_cli(env, "verify", "products").stdout
    assert re.search(r"missing\s+1\s+e\.g\. 17", text) and re.search(r"stale\s+2\s+e\.g\. 42, 105", text), text

    # A key being synced right now is not drift.
    db.execute("UPDATE products SET name = 'in flight' WHERE id = 5")
    client.partial_update_object("products", "5", {"name": "whatever"})
    report = json.loads(run_cli(env, "verify", "products", "--json").stdout)
    assert report["stale"] == 2 and report["in_flight"] == 1

    repaired = run_cli(env, "verify", "products", "--repair")
    assert repaired.returncode == 1, repaired.stdout
    assert "repair enqueued 4 key(s)" in repaired.stdout and "deleted 1 record(s)" in repaired.stdout, repaired.stdout
    assert "not-a-key" not in emulator.records("products")
    spill_all(db)
    ops = dict(db.execute("SELECT record_id, operation FROM algolia_sync_queue").fetchall())
    assert ops == {"17": "REINDEX", "42": "REINDEX", "105": "REINDEX", "9999": "REINDEX", "5": "UPDATE"}
    drain(env)
    after = run_cli(env, "verify", "products")
    assert after.returncode == 0 and "clean" in after.stdout, after.stdout
    assert_index_matches(db, emulator, "products", "products")


def test_verify_compares_records_built_from_a_source_view(db, env, emulator):
    db.execute("CREATE TABLE brands (id integer PRIMARY KEY, name text NOT NULL)")
    db.execute(PRODUCTS.replace("stock       integer DEFAULT 0,", "brand_id    integer REFERENCES brands,"))
    db.execute(
        "CREATE VIEW products_search AS SELECT p.id, p.name, p.price, b.name AS brand "
        "FROM products p JOIN brands b ON b.id = p.brand_id"
    )
    assert run_cli(env, "watch", "products", "--index", "products", "--source", "products_search").returncode == 0
    db.execute("INSERT INTO brands VALUES (1, 'acme')")
    db.execute(
        "INSERT INTO products (id, name, price, brand_id) SELECT g, 'p' || g, g, 1 FROM generate_series(1, 20) g"
    )
    drain(env)
    assert run_cli(env, "verify", "products").returncode == 0
    db.execute("UPDATE brands SET name = 'ACME'")  # the view changes, no trigger on brands: every record is stale
    report = json.loads(run_cli(env, "verify", "products", "--json").stdout)
    assert report["stale"] == 20 and report["drift"] == 20


# ---- health and metrics ----------------------------------------------------------------------


def test_healthz_and_metrics(products, env, emulator, start_pool):
    db = products
    port = free_port()
    pool = start_pool(
        "--workers",
        "2",
        "--batch-size",
        "20",
        extra_env={
            "HEALTH_PORT": str(port),
            "BATCH_SIZE_MAX": "20",  # claims of 20 exactly: the batch count below depends on it
            "HEALTH_STALL_SECONDS": "2",
            "RETRY_BACKOFF": "100",
            "RETRY_BACKOFF_MAX": "400",
            "MAX_RETRIES": "1000",
            "POLLING_INTERVAL": "200",
        },
    )
    _, body = wait_until(
        lambda: (lambda r: r if r[0] == 200 else None)(http_get(port, "/healthz")),
        timeout=20,
        message="/healthz to answer 200",
    )
    health = json.loads(body)
    assert health["status"] == "ok" and health["workers_alive"] == 2 and health["database"] == "ok"

    _insert(db, 1, 100)
    wait_until(lambda: not queue_counts(db), message="the first sync")
    emulator.inject_fault(status=429, retry_after=0, count=1, writes_only=True)
    db.execute("UPDATE products SET stock = stock + 1 WHERE id <= 10")
    wait_until(lambda: not queue_counts(db), message="the throttled sync")
    # A scrape reads each worker's metric files one after another, not at one instant: a batch settled
    # meanwhile can be in one file's figures and not yet in another's, so both are waited for.
    text = wait_until(
        lambda: (
            lambda t: (
                t
                if prometheus_sample(t, "workerpool_records_synced_total", index="products", action="upsert") == 110
                and prometheus_sample(t, "workerpool_change_to_ack_lag_seconds_count") == 110
                else None
            )
        )(http_get(port, "/metrics")[1]),
        message="the counters and the lag histogram to add up across workers",
    )
    assert (
        prometheus_sample(text, "workerpool_batch_duration_seconds_count") >= 6
    )  # 100 rows / batch size 20, plus the updates
    assert 0 < prometheus_sample(text, "workerpool_batch_duration_seconds_sum") < 30
    assert prometheus_sample(text, "workerpool_change_to_ack_lag_seconds_count") == 110
    assert prometheus_sample(text, "workerpool_algolia_throttled_total") == 1
    assert prometheus_sample(text, "workerpool_records_failed_total", index="products") is None  # nothing failed
    assert prometheus_sample(text, "workerpool_worker_restarts_total") == 0
    assert prometheus_sample(text, "workerpool_workers", state="alive") == 2
    assert prometheus_sample(text, "workerpool_database_up") == 1
    assert prometheus_sample(text, "workerpool_last_ack_timestamp_seconds") == pytest.approx(time.time(), abs=30)
    assert "# TYPE workerpool_queue_depth gauge" in text

    # A worker dies: the supervisor restarts it; the dead worker's counts stay in the totals.
    victim = pool.worker_pids()[0]
    import os

    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len([p for p in pool.worker_pids() if p != victim]) == 2, timeout=20, message="a replacement")
    text = http_get(port, "/metrics")[1]
    assert prometheus_sample(text, "workerpool_worker_restarts_total") == 1
    assert prometheus_sample(text, "workerpool_records_synced_total", index="products", action="upsert") == 110

    # Algolia answers 503 to every write: the backlog stops moving and /healthz turns 503.
    emulator.inject_fault(status=503, writes_only=True)
    db.execute("UPDATE products SET stock = stock + 1 WHERE id > 50")
    _, body = wait_until(
        lambda: (lambda r: r if r[0] == 503 else None)(http_get(port, "/healthz")),
        timeout=20,
        message="/healthz to report the stall",
    )
    health = json.loads(body)
    assert health["status"] == "unhealthy" and health["backlog"] == 50, health
    assert any("not moving" in r or "Algolia unreachable" in r for r in health["reasons"]), health
    text = http_get(port, "/metrics")[1]
    assert (
        prometheus_sample(text, "workerpool_queue_depth", table="products", status="pending")
        + prometheus_sample(text, "workerpool_queue_depth", table="products", status="processing")
        == 50
    )
    # Rows being sent (processing) are not pending: the gauge shows the backlog's age once some of it
    # is back in the queue between attempts, which the timing of the scrape decides.
    wait_until(
        lambda: (
            (
                prometheus_sample(
                    http_get(port, "/metrics")[1], "workerpool_oldest_pending_age_seconds", table="products"
                )
                or 0
            )
            >= 2
        ),
        timeout=20,
        message="the oldest pending row's age to show the stalled backlog",
    )
    assert (prometheus_sample(text, "workerpool_records_retried_total", index="products") or 0) > 0

    # Algolia recovers: the backlog drains and /healthz is 200 again.
    emulator.clear_faults()
    wait_until(lambda: http_get(port, "/healthz")[0] == 200, timeout=20, message="/healthz to recover")
    wait_until(lambda: not queue_counts(db), message="the backlog to drain")
    assert pool.stop() == 0
    assert_index_matches(db, emulator, "products", "products")
    assert http_get(port, "/healthz")[0] == 0, "the health server stops with the supervisor"


def test_health_port_in_use_exits_2_with_one_line(env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli({**env, "HEALTH_PORT": str(port)}, "run", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and f"HEALTH_PORT={port}" in result.stderr
    bad = run_cli({**env, "HEALTH_PORT": str(free_port()), "HEALTH_STALL_SECONDS": "soon"}, "run", timeout=30)
    assert bad.returncode == 2 and "HEALTH_STALL_SECONDS='soon'" in bad.stderr


def test_verify_and_atomic_reindex_respect_the_attribute_selection(db, env, emulator):
    db.execute(PRODUCTS)
    assert run_cli(env, "watch", "products", "--index", "products", "--attributes", "name,price").returncode == 0
    _insert(db, 1, 30)
    drain(env)
    assert set(emulator.records("products")["7"]) == {"objectID", "name", "price", "_version"}
    assert run_cli(env, "verify", "products").returncode == 0
    _client(emulator).partial_update_object("products", "7", {"stock": 99})  # an attribute the index must not have
    report = json.loads(run_cli(env, "verify", "products", "--json").stdout)
    assert report["stale"] == 1 and report["samples"]["stale"] == ["7"]
    result = run_cli(env, "reindex", "products", "--atomic")
    assert result.returncode == 0, result.stderr
    assert set(emulator.records("products")["7"]) == {"objectID", "name", "price", "_version"}
    assert run_cli(env, "verify", "products").returncode == 0


def test_atomic_reindex_resumes_into_its_temporary_index_or_restarts_cleanly(products, env, emulator):
    from workerpool import config
    from workerpool.ops.reindex import reindex

    db = products
    _insert(db, 1, 1000)
    drain(env, "--batch-size", "500")
    settings = config.load(environ=env, env_file=None)
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn, pytest.raises(KeyboardInterrupt):
        reindex(settings, conn, "products", atomic=True, chunk_size=100, stream=_InterruptAfter(3))
    tmp, done = db.execute("SELECT tmp_index, rows_done FROM workerpool_reindex_progress").fetchone()
    assert tmp.startswith("products_tmp_") and 0 < done < 1000
    assert len(emulator.records(tmp)) == done  # the partial copy is there; the live index is untouched
    assert len(emulator.records("products")) == 1000

    # A plain reindex refuses to mix with the interrupted atomic one.
    mixed = run_cli(env, "reindex", "products")
    assert mixed.returncode == 2 and "--restart" in mixed.stderr

    db.execute("UPDATE products SET name = 'after the interruption' WHERE id = 3")  # synced by no worker yet
    result = run_cli(env, "reindex", "products", "--atomic", "--chunk-size", "100")
    assert result.returncode == 0, result.stderr
    assert "(resumed)" in result.stdout and tmp in result.stdout
    assert f"{1000 - done} record(s) written" in result.stdout, result.stdout
    assert [i.name for i in _client(emulator).list_indices().items] == ["products"]
    drain(env)
    assert_index_matches(db, emulator, "products", "products")

    # --restart drops an abandoned temporary index and starts over.
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn, pytest.raises(KeyboardInterrupt):
        reindex(settings, conn, "products", atomic=True, chunk_size=100, stream=_InterruptAfter(2))
    abandoned = db.execute("SELECT tmp_index FROM workerpool_reindex_progress").fetchone()[0]
    time.sleep(1.1)  # a new temporary index name (it carries the time in seconds)
    result = run_cli(env, "reindex", "products", "--atomic", "--restart")
    assert result.returncode == 0 and "(resumed)" not in result.stdout and "1000 record(s) written" in result.stdout
    assert [i.name for i in _client(emulator).list_indices().items] == ["products"], abandoned
    assert_index_matches(db, emulator, "products", "products")


def test_atomic_reindex_waits_for_tasks_algolia_publishes_late_and_says_so_when_it_gives_up(
    products, env, emulator, monkeypatch
):
    """Algolia publishes a large index's copy and move after a while: the command polls until it does
    (the client's own helper would give up after 100 polls). Past the wait, one line and exit 4, and
    the progress is kept for the next run."""
    from workerpool import config
    from workerpool.ops import admin
    from workerpool.ops.reindex import ReindexError, reindex

    db = products
    _insert(db, 1, 200)
    drain(env)
    emulator.set_task_delay(2.5)
    started = time.monotonic()
    result = run_cli(env, "reindex", "products", "--atomic")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 5, "the copy of the live index and the move each waited for publication"
    assert [i.name for i in _client(emulator).list_indices().items] == ["products"]
    assert_index_matches(db, emulator, "products", "products")

    emulator.set_task_delay(60)
    monkeypatch.setattr(admin, "TASK_WAIT_S", 1.0)
    monkeypatch.setattr(admin.Admin.wait_published, "__defaults__", (1.0,))
    settings = config.load(environ=env, env_file=None)
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn, pytest.raises(ReindexError) as failed:
        reindex(settings, conn, "products", atomic=True)
    assert failed.value.exit_code == 4
    message = str(failed.value)
    assert "has not published task" in message and "progress kept" in message and "\n" not in message
    assert db.execute("SELECT count(*) FROM workerpool_reindex_progress").fetchone()[0] == 1
