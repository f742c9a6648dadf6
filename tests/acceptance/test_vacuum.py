"""Vacuum health and log retention, against real sessions that hold the xmin horizon back.

Dead tuples are read after an explicit VACUUM of the queue: VACUUM reports to the statistics exactly
the dead versions it could not remove, so a count that grows from one VACUUM to the next is vacuum
being blocked, not vacuum not having run. The open-transaction test runs on the shared server; the
replication-slot and prepared-transaction tests need settings it must not be changed for
(`wal_level = logical`, a standby, `max_prepared_transactions`) and run on a throwaway cluster.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from testing import API_KEY, APP_ID, PRODUCTS, queue_counts, run_cli, throwaway_pg, wait_until
from testing.http import free_port, http_get, prometheus_sample

WARN_ENV = {
    "VACUUM_WARN_MIN_DEAD": "100",
    "VACUUM_WARN_DEAD_RATIO": "5",
    "VACUUM_WARN_HORIZON_SECONDS": "2",
    "POLLING_INTERVAL": "200",
}


def _stats(env: dict[str, str]) -> dict[str, Any]:
    result = run_cli({**env, **WARN_ENV}, "stats", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _table(stats: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in stats["vacuum"]["tables"] if t["table"] == name)


def _queue_deletes(db: psycopg.Connection) -> int:
    return db.execute("SELECT n_tup_del FROM pg_stat_user_tables WHERE relname = 'algolia_sync_queue'").fetchone()[0]


def _sync_round(db: psycopg.Connection, first: int, rows: int, vacuum: bool = True) -> None:
    """Insert or change `rows` products, wait for the pool to sync them and for the workers' sessions
    to report their acknowledgements to the statistics (an idle session may take 10 s), then VACUUM
    the queue."""
    deletes = _queue_deletes(db)
    db.execute(
        "INSERT INTO products (id, name, price, stock) SELECT g, 'item ' || g, g, 0 "
        "FROM generate_series(%s::int, %s::int) g ON CONFLICT (id) DO UPDATE SET stock = products.stock + 1",
        (first, first + rows - 1),
    )
    wait_until(lambda: not queue_counts(db), timeout=60, message="the pool to sync the round")
    wait_until(lambda: _queue_deletes(db) >= deletes + rows, timeout=30, message="the statistics to catch up")
    if vacuum:
        db.execute("VACUUM algolia_sync_queue")


def _queue_dead_after_rounds(db: psycopg.Connection, env: dict[str, str]) -> tuple[int, int, dict[str, Any]]:
    _sync_round(db, 1, 400)
    first = _table(_stats(env), "algolia_sync_queue")["dead_tuples"]
    _sync_round(db, 1, 400)
    stats = _stats(env)
    return first, _table(stats, "algolia_sync_queue")["dead_tuples"], stats


def test_an_open_transaction_is_named_while_dead_tuples_grow(products, env, start_pool, db_url):
    db = products
    port = free_port()
    start_pool("--workers", "2", extra_env={**WARN_ENV, "HEALTH_PORT": str(port)})
    blocker = psycopg.connect(db_url, application_name="nightly-report")
    try:
        blocker.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        blocker.execute("SELECT count(*) FROM products")  # the snapshot is now held, idle in transaction
        pid = blocker.info.backend_pid
        time.sleep(2.5)  # older than VACUUM_WARN_HORIZON_SECONDS

        first, second, stats = _queue_dead_after_rounds(db, env)
        assert 800 <= first < second, (first, second)  # a claim and an ack per synced key, none removable
        horizon = stats["vacuum"]["horizon"]
        assert horizon["kind"] == "transaction" and horizon["pid"] == pid
        assert horizon["application_name"] == "nightly-report" and horizon["state"] == "idle in transaction"
        assert horizon["age_s"] >= 2.5 and stats["vacuum"]["horizon_age_s"] >= 2.5
        assert any(f"pid {pid} (nightly-report)" in w and "algolia_sync_queue" in w for w in stats["warnings"])
        assert any("VACUUM_WARN_HORIZON_SECONDS" in w and f"pid {pid}" in w for w in stats["warnings"])
        text = run_cli({**env, **WARN_ENV}, "stats").stdout
        assert f"xmin horizon: held by the transaction of pid {pid} (nightly-report), idle in transaction" in text

        metrics = http_get(port, "/metrics")[1]
        assert prometheus_sample(metrics, "workerpool_table_dead_tuples", table="algolia_sync_queue") >= second
        assert prometheus_sample(metrics, "workerpool_table_live_tuples", table="algolia_sync_queue") == 0
        assert prometheus_sample(metrics, "workerpool_table_size_bytes", table="algolia_sync_log_batches") > 0
        assert prometheus_sample(metrics, "workerpool_xmin_horizon_age_seconds") >= 2.5
        assert (
            prometheus_sample(
                metrics,
                "workerpool_xmin_horizon_holder",
                kind="transaction",
                holder="",
                pid=str(pid),
                application="nightly-report",
                holds="tables",
            )
            > 0
        )
        status, body = http_get(port, "/healthz")
        health = json.loads(body)
        assert status == 200 and health["status"] == "ok", body  # a warning, not a 503
        assert any(f"pid {pid}" in w for w in health["warnings"]) and health["xmin_horizon"]["age_s"] >= 2.5
    finally:
        blocker.close()

    wait_until(
        lambda: not db.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone(),
        message="the blocker's session to end",
    )
    db.execute("VACUUM algolia_sync_queue")  # nothing holds the horizon: every dead version goes
    stats = _stats(env)
    assert _table(stats, "algolia_sync_queue")["dead_tuples"] == 0
    assert stats["vacuum"]["horizon"] is None and stats["warnings"] == []
    # /healthz shares one database check per second: the next one sees the horizon free.
    wait_until(
        lambda: json.loads(http_get(port, "/healthz")[1]).get("warnings") is None,
        timeout=10,
        message="/healthz without warnings",
    )


# ---- on a throwaway cluster ---------------------------------------------------------------------

SKIP = throwaway_pg.missing_reason()


@pytest.fixture(scope="module")
def cluster() -> Iterator[throwaway_pg.Cluster]:
    if SKIP:
        pytest.skip(SKIP)
    with throwaway_pg.Cluster(
        {"wal_level": "logical", "autovacuum": "off", "max_prepared_transactions": "4", "fsync": "off"}
    ) as c:
        c.start()
        yield c


@pytest.fixture
def cluster_env(cluster: throwaway_pg.Cluster, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`env` pointed at a fresh database of the cluster, migrated, with `products` watched."""
    name = f"wp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = psycopg.conninfo.make_conninfo(cluster.url, dbname=name)
    cenv = {**env, "DATABASE_URL": url}
    assert run_cli(cenv, "migrate").returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PRODUCTS)
    assert run_cli(cenv, "watch", "products", "--index", "products").returncode == 0
    yield cenv
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        for slot in admin.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)).fetchall():
            admin.execute("SELECT pg_drop_replication_slot(%s)", slot)
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_a_standby_slot_is_named_while_dead_tuples_grow(cluster, cluster_env, start_pool):
    """A standby with hot_standby_feedback and a long query on it holds the primary's slot xmin back."""
    port = free_port()
    start_pool("--workers", "2", extra_env={**cluster_env, **WARN_ENV, "HEALTH_PORT": str(port)})
    standby = cluster.standby("reporting_replica", {"hot_standby_feedback": "on", "wal_receiver_status_interval": "1"})
    try:
        reader = psycopg.connect(psycopg.conninfo.make_conninfo(cluster_env["DATABASE_URL"], port=standby.port))
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        reader.execute("SELECT count(*) FROM products")  # a long report on the replica
        with psycopg.connect(cluster_env["DATABASE_URL"], autocommit=True) as db:
            seen: list[Any] = []

            def settled() -> Any:  # the feedback (every second) has caught up with the report's snapshot
                seen.append(db.execute("SELECT xmin FROM pg_replication_slots").fetchone()[0])
                return seen[-1] if len(seen) >= 3 and seen[-1] is not None and seen[-1] == seen[-3] else None

            held = wait_until(
                settled, timeout=30, interval=1.0, message="the standby's feedback to hold the slot's xmin"
            )
            first, second, stats = _queue_dead_after_rounds(db, cluster_env)
            assert db.execute("SELECT xmin FROM pg_replication_slots").fetchone()[0] == held
        assert 800 <= first < second, (first, second)
        horizon = stats["vacuum"]["horizon"]
        assert horizon["kind"] == "replication_slot" and horizon["name"] == "reporting_replica", stats["vacuum"]
        assert horizon["slot_type"] == "physical" and horizon["active"] and horizon["blocks_hot_tables"]
        assert horizon["age_xids"] > 0 and horizon["age_s"] is None  # a slot does not say since when
        assert any("replication slot 'reporting_replica'" in w and "algolia_sync_queue" in w for w in stats["warnings"])
        metrics = http_get(port, "/metrics")[1]
        assert prometheus_sample(metrics, "workerpool_table_dead_tuples", table="algolia_sync_queue") >= second
        assert prometheus_sample(metrics, "workerpool_xmin_horizon_age_xids") == pytest.approx(
            horizon["age_xids"], abs=50
        )
        assert (
            prometheus_sample(
                metrics,
                "workerpool_xmin_horizon_holder",
                kind="replication_slot",
                holder="reporting_replica",
                pid=str(horizon["pid"]),
                application="",
                holds="tables",
            )
            > 0
        )
        reader.close()
    finally:
        standby.stop()
    with psycopg.connect(cluster.url, autocommit=True) as admin:
        admin.execute("SELECT pg_drop_replication_slot('reporting_replica')")


def test_a_logical_slot_is_named_and_holds_only_the_catalog(cluster, cluster_env, start_pool):
    """A logical slot keeps catalog rows (catalog_xmin), not the queue's: it is listed, never blamed."""
    port = free_port()
    start_pool("--workers", "1", extra_env={**cluster_env, **WARN_ENV, "HEALTH_PORT": str(port)})
    with psycopg.connect(cluster_env["DATABASE_URL"], autocommit=True) as db:
        db.execute("SELECT pg_create_logical_replication_slot('search_cdc', 'pgoutput')")
        _sync_round(db, 1, 300, vacuum=False)
        stats = _stats(cluster_env)  # autovacuum is off in this cluster: the dead versions wait for a VACUUM
        assert _table(stats, "algolia_sync_queue")["dead_tuples"] >= 600  # claimed and acknowledged versions
        slot = next(h for h in stats["vacuum"]["holders"] if h["kind"] == "replication_slot")
        assert slot["name"] == "search_cdc" and slot["slot_type"] == "logical" and not slot["blocks_hot_tables"]
        assert stats["vacuum"]["horizon"] is None  # nothing holds the queue back
        assert (
            "also: inactive logical replication slot 'search_cdc'"
            in run_cli({**cluster_env, **WARN_ENV}, "stats").stdout
        )
        metrics = http_get(port, "/metrics")[1]
        assert (
            prometheus_sample(
                metrics,
                "workerpool_xmin_horizon_holder",
                kind="replication_slot",
                holder="search_cdc",
                pid="",
                application="",
                holds="catalog",
            )
            >= 0
        )
        db.execute("VACUUM algolia_sync_queue")
        assert _table(_stats(cluster_env), "algolia_sync_queue")["dead_tuples"] == 0  # the slot did not stop it


def test_a_forgotten_prepared_transaction_is_named(cluster, cluster_env):
    with psycopg.connect(cluster_env["DATABASE_URL"], autocommit=True) as db:
        db.execute(
            "CREATE TABLE orders (id int)"
        )  # not watched: a watched table's trigger NOTIFYs, which PREPARE refuses
        db.execute("BEGIN")
        db.execute("INSERT INTO orders VALUES (1)")
        db.execute("PREPARE TRANSACTION 'checkout-42'")
        try:
            time.sleep(2.5)
            stats = _stats(cluster_env)
            horizon = stats["vacuum"]["horizon"]
            assert horizon["kind"] == "prepared_transaction" and horizon["name"] == "checkout-42"
            assert horizon["age_s"] >= 2.5
            assert any(
                "prepared transaction 'checkout-42'" in w and "ROLLBACK PREPARED" in w for w in stats["warnings"]
            )
        finally:
            db.execute("ROLLBACK PREPARED 'checkout-42'")


# ---- retention ----------------------------------------------------------------------------------


def test_the_running_pool_prunes_the_log_without_cleanup(products, env, start_pool):
    db = products
    db.execute(
        """INSERT INTO algolia_sync_log (table_name, record_id, operation, status, synced_at)
           SELECT 'products', g::text, 'UPDATE', 'success', now() - interval '8 days' - g * interval '1 second'
             FROM generate_series(1, 12000) g"""
    )  # 12,000 calls of one record each: many of the pool's batches of calls
    db.execute(
        """INSERT INTO algolia_sync_log (table_name, record_id, operation, status, synced_at)
           SELECT 'products', g::text, 'UPDATE', 'success', now() - interval '6 days' FROM generate_series(1, 50) g"""
    )
    pool = start_pool("--workers", "3", extra_env={"LOG_RETENTION_DAYS": "7"})
    db.execute("INSERT INTO products (name) SELECT 'item ' || g FROM generate_series(1, 20) g")
    wait_until(
        lambda: (
            db.execute("SELECT count(*) FROM algolia_sync_log WHERE synced_at < now() - interval '7 days'").fetchone()[
                0
            ]
            == 0
        ),
        timeout=60,
        interval=0.5,
        message="the pool to prune the old log rows",
    )
    wait_until(lambda: not queue_counts(db), message="the sync")
    kept = dict(db.execute("SELECT status, count(*) FROM algolia_sync_log GROUP BY 1").fetchall())
    assert kept == {"success": 50 + 20}  # six-day-old rows and the new ones stay
    pruned = wait_until(lambda: pool.lines("log_pruned"), message="the log line")
    assert sum(e["rows"] for e in pruned) == 12000
    assert pool.proc.poll() is None  # still running: nobody called cleanup, the pool did it


def test_log_retention_zero_keeps_everything(products, env, start_pool):
    db = products
    db.execute("""INSERT INTO algolia_sync_log (table_name, record_id, operation, status, synced_at)
                  VALUES ('products', '1', 'UPDATE', 'success', now() - interval '900 days')""")
    pool = start_pool(extra_env={"LOG_RETENTION_DAYS": "0"})
    db.execute("INSERT INTO products (name) VALUES ('a')")
    wait_until(lambda: not queue_counts(db) and pool.lines("batch_synced"), message="the sync")
    time.sleep(11)  # past the first pass a retention of 7 days would have made
    assert db.execute("SELECT count(*) FROM algolia_sync_log").fetchone()[0] == 2
    assert pool.lines("log_pruned") == []


@pytest.mark.parametrize(
    "name,value",
    [
        ("LOG_RETENTION_DAYS", "-1"),
        ("LOG_RETENTION_DAYS", "a week"),
        ("LOG_RETENTION_DAYS", "nan"),
        ("VACUUM_WARN_DEAD_RATIO", "many"),
        ("VACUUM_WARN_HORIZON_SECONDS", "-5"),
    ],
)
def test_bad_vacuum_and_retention_settings_exit_2(env, name, value):
    result = run_cli({**env, name: value}, "run", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and f"{name}={value!r}" in result.stderr and "Traceback" not in result.stderr
    assert API_KEY not in result.stderr and APP_ID  # the key never leaks
