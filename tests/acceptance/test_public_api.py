"""The public Python API (`import workerpool`): a custom sync loop built on it behaves as the workers do."""

from __future__ import annotations

import importlib.util
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from psycopg import sql

import workerpool
from testing import PRODUCTS, drain, queue_counts, run_cli, wait_until, with_dbname
from testing.docs import program
from workerpool import AlgoliaService, DatabaseService, Settings, enqueue

HERE = Path(__file__).resolve().parent
EXAMPLE = program("sync_loop.py")  # docs/api.md's loop, taken from the page
PUBLIC = {
    "AlgoliaService",
    "Batch",
    "BatchResult",
    "ConfigError",
    "DatabaseService",
    "DatabaseUnavailable",
    "Settings",
    "SyncItem",
    "SyncResult",
    "WatchError",
    "Watched",
    "__version__",
    "enqueue",
    "run",
}
LOG_COLUMNS = "record_id, operation, action, status, attempts, error, index_name"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings_for(env: dict[str, str], **overrides: object) -> Settings:
    return Settings.from_env(environ=env, env_file=None, **overrides)


@pytest.fixture
def second_db_url(pg_server: str, template_db: str) -> Iterator[str]:
    """Another fresh, migrated database: the workers' side of a comparison."""
    name = f"{template_db}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
        )
    yield with_dbname(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_package_exports_exactly_the_public_names_each_documented_with_an_example():
    assert set(workerpool.__all__) == PUBLIC
    for name in PUBLIC - {"__version__"}:
        obj = getattr(workerpool, name)
        if name == "Settings":  # the settings' own fields are documented in the README; its API is from_env
            obj = obj.from_env
        doc = inspect.getdoc(obj) or ""
        assert doc, f"{name} has no docstring"
        if name not in (
            "ConfigError",
            "DatabaseUnavailable",
            "WatchError",
            "Watched",
        ):  # the errors and the registration are data
            assert "Example" in doc, f"{name}'s docstring shows no example"


def test_the_api_reference_documents_exactly_the_public_names():
    page = (HERE.parent.parent / "docs" / "api.md").read_text()
    documented = {line.split("workerpool.", 1)[1].strip() for line in page.splitlines() if line.startswith("::: ")}
    assert documented == PUBLIC - {"__version__"}
    assert '```python title="sync_loop.py"' in page  # the page shows the loop the tests run


def test_a_custom_loop_produces_the_workers_records_and_log(db, db_url, second_db_url, env, emulator, monkeypatch):
    """Run the documented loop on one database and `workerpool run --drain` on another, through the
    same writes; the indexes and the algolia_sync_log rows are the same."""
    monkeypatch.syspath_prepend(str(HERE))  # the loop runs in this process and imports api_transform
    sides = {"api": (db_url, "api_"), "wrk": (second_db_url, "wrk_")}
    envs = {
        side: {**env, "DATABASE_URL": url, "ALGOLIA_INDEX_PREFIX": prefix, "PYTHONPATH": str(HERE)}
        for side, (url, prefix) in sides.items()
    }
    example = load_example()

    def sync(side: str) -> None:
        if side == "api":
            example.sync(settings_for(envs[side]), drain=True)
        else:
            drain(envs[side])

    for side, (url, _) in sides.items():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(PRODUCTS)
            conn.execute(
                "CREATE VIEW products_public AS SELECT id, name, price, tags, attrs, released_on FROM products"
            )
        result = run_cli(
            envs[side],
            "watch",
            "products",
            "--index",
            "products",
            "--source",
            "products_public",
            "--transform",
            "api_transform:product",
        )
        assert result.returncode == 0, result.stderr
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO products (id, name, price, tags, attrs, released_on) "
                "SELECT g, 'item ' || g, g * 1.5, ARRAY['t' || g], jsonb_build_object('n', g), date '2024-01-01' + g "
                "FROM generate_series(1, 250) g"
            )
        sync(side)
        with psycopg.connect(url) as conn:  # one transaction: an update, a resync that changes nothing, a delete
            conn.execute("UPDATE products SET name = 'renamed ' || id WHERE id % 10 = 0")
            enqueue(conn, "products", range(1, 21))
            conn.execute("DELETE FROM products WHERE id > 240")
        sync(side)

    api, wrk = emulator.records("api_products"), emulator.records("wrk_products")
    assert len(api) == 200  # 240 rows left, 40 of them priced over 300: the transform deletes them
    assert api["7"]["label"] == "ITEM 7" and "stock" not in api["7"]  # the transform, and the view's columns
    for index in (api, wrk):
        for record in index.values():
            assert isinstance(record.pop("_version"), int)
    assert api == wrk

    logs = {}
    for side, (url, prefix) in sides.items():
        with psycopg.connect(url) as conn:
            rows = conn.execute(f"SELECT {LOG_COLUMNS} FROM algolia_sync_log").fetchall()
            hashes = conn.execute("SELECT object_id, hash, shape FROM algolia_sync_hashes ORDER BY 1").fetchall()
            assert queue_counts(conn) == {}
        logs[side] = (sorted((*r[:-1], r[-1].removeprefix(prefix)) for r in rows), hashes)
    api_log, wrk_log = logs["api"], logs["wrk"]
    assert api_log == wrk_log
    actions = {(r[2], r[3]) for r in api_log[0]}
    assert actions == {("partialUpdateObject", "success"), ("skip", "skipped"), ("deleteObject", "success")}


CLAIM_AND_HANG = textwrap.dedent(
    """
    import sys, time
    from workerpool import DatabaseService, Settings
    db = DatabaseService(sys.argv[1], Settings.from_env(env_file=None))
    items = db.get_pending_syncs(1000)
    print(len(items), flush=True)
    time.sleep(600)
    """
)


def test_a_loop_killed_mid_batch_loses_nothing(products, db_url, env, emulator):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 300) g")
    short_lease = {**env, "LEASE_TIMEOUT": "2000"}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HANG, db_url], env=short_lease, stdout=subprocess.PIPE, text=True
    )
    try:
        claimed = int(proc.stdout.readline())
        assert claimed == 300
        assert queue_counts(db) == {"processing": 300}
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2.2)  # the lease expires; the next claim recovers the rows and takes them again
    load_example().sync(settings_for(short_lease), drain=True)
    assert queue_counts(db) == {}
    assert len(emulator.records("products")) == 300
    attempts = db.execute("SELECT min(attempts), max(attempts), count(*) FROM algolia_sync_log").fetchone()
    assert attempts == (2, 2, 300)  # the killed claim counted as an attempt, as for a killed worker


def test_mark_failed_retries_with_backoff_then_fails_at_max_retries(products, env, emulator):
    db = products
    db.execute("INSERT INTO products (id, name) VALUES (7, 'seven')")
    settings = settings_for(env, max_retries=3, retry_backoff=0)
    with DatabaseService(settings.database_url, settings) as service:
        for attempt in (1, 2, 3):
            items = wait_until(lambda: service.get_pending_syncs(10), timeout=10)
            assert [(i.record_id, i.attempts) for i in items] == [("7", attempt)]
            assert service.mark_failed(items[0].id, f"upstream said no ({attempt})")
            row = db.execute("SELECT status, attempts, last_error FROM algolia_sync_queue").fetchone()
            expected = "failed" if attempt == 3 else "pending"
            assert row == (expected, attempt, f"upstream said no ({attempt})")
        assert service.get_pending_syncs(10) == []
        with pytest.raises(ValueError, match=str(items[0].id)):
            service.mark_failed(items[0].id, "again")  # settled: no longer this service's
    logged = db.execute("SELECT status, attempts, error FROM algolia_sync_log").fetchall()
    assert logged == [("failed", 3, "upstream said no (3)")]
    assert emulator.records("products") == {}


def test_mark_failed_waits_for_the_backoff(products, env):
    products.execute("INSERT INTO products (id, name) VALUES (1, 'one')")
    settings = settings_for(env, retry_backoff=60_000)
    with DatabaseService(settings.database_url, settings) as service:
        (item,) = wait_until(lambda: service.get_pending_syncs(10), timeout=10)
        service.mark_failed(item.id, "later")
        assert service.get_pending_syncs(10) == []
        wait = products.execute("SELECT next_attempt_at - now() FROM algolia_sync_queue").fetchone()[0]
        assert 25 <= wait.total_seconds() <= 60  # RETRY_BACKOFF jittered within [50%, 100%]


def test_enqueue_follows_the_callers_transaction(products, db_url, env, emulator):
    db = products
    with psycopg.connect(db_url) as conn:  # triggers off, as a bulk load or a migration runs
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 5) g")
        assert enqueue(conn, "products", ["001", 2, 3]) == 3
        conn.rollback()
    assert queue_counts(db) == {}
    assert db.execute("SELECT count(*) FROM products").fetchone()[0] == 0

    with psycopg.connect(db_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 5) g")
        with pytest.raises(ValueError, match="not a valid integer"):
            enqueue(conn, "products", [1, "x"])
        with pytest.raises(ValueError, match="'BOGUS'"):
            enqueue(conn, "products", [1], operation="BOGUS")
        assert enqueue(conn, "products", ["001", 2, 3]) == 3  # the transaction is still usable
    queued = db.execute("SELECT record_id, operation, status FROM algolia_sync_queue ORDER BY id").fetchall()
    assert queued == [("1", "UPDATE", "pending"), ("2", "UPDATE", "pending"), ("3", "UPDATE", "pending")]
    load_example().sync(settings_for(env), drain=True)
    assert sorted(emulator.records("products")) == ["1", "2", "3"]


def test_the_example_program_passes_mypy_strict():
    mypy = Path(sys.executable).with_name("mypy")
    result = subprocess.run(
        [str(mypy), "--strict", "--no-incremental", str(EXAMPLE)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_the_example_program_runs_from_the_command_line(products, env, emulator):
    products.execute("INSERT INTO products (id, name) VALUES (1, 'one'), (2, 'two')")
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--drain"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "synced 2 row(s)"
    assert sorted(emulator.records("products")) == ["1", "2"]
    bad = subprocess.run(
        [sys.executable, str(EXAMPLE)], env={**env, "BATCH_SIZE": "lots"}, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: BATCH_SIZE='lots'") and "Traceback" not in bad.stderr


def test_run_drains_from_python_and_returns_the_exit_code(products, env, emulator):
    products.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 50) g")
    code = textwrap.dedent(
        """
        import workerpool
        raise SystemExit(workerpool.run(workerpool.Settings.from_env(env_file=None), workers=2, drain=True))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert '"workers": 2' in result.stdout
    assert len(emulator.records("products")) == 50


def test_algolia_service_reports_rows_it_cannot_build_and_the_rest_is_synced(products, env, emulator):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 10) g")
    settings = settings_for(env, max_record_bytes=200)
    db.execute("UPDATE products SET name = repeat('x', 500) WHERE id = 4")
    with DatabaseService(settings.database_url, settings) as service, AlgoliaService(service) as algolia:
        items = wait_until(lambda: service.get_pending_syncs(100), timeout=10)
        results = algolia.sync_batch(items)
        assert [r.queue_id for r in results] == [i.id for i in items]
        failed = [r for r in results if r.status != "completed"]
        assert [(r.object_id, r.status) for r in failed] == [("4", "failed")]
        assert "over MAX_RECORD_BYTES=200" in (failed[0].error or "")
        assert service.settle(results) == 10
    assert sorted(emulator.records("products"), key=int) == [str(i) for i in range(1, 11) if i != 4]
    assert queue_counts(db) == {"failed": 1}


def test_an_existing_pool_is_used_without_changing_its_connections(products, db_url, env, emulator):
    """Rows are read with the workers' pinned settings even when the caller's pool has others, and
    the caller's connections keep theirs."""
    from psycopg_pool import ConnectionPool

    from testing import assert_index_matches

    db = products
    db.execute(
        "INSERT INTO products (id, name, released_on, updated_at) "
        "SELECT g, 'p' || g, date '2024-03-01' + g, timestamptz '2024-03-01 12:00+02' FROM generate_series(1, 20) g"
    )
    with ConnectionPool(
        db_url,
        min_size=1,
        max_size=2,
        kwargs={"autocommit": True, "options": "-c TimeZone=Asia/Tokyo -c IntervalStyle=iso_8601"},
    ) as pool:
        service = DatabaseService(pool, settings_for(env))
        with AlgoliaService(service) as algolia:
            while not service.idle():
                service.settle(algolia.sync_batch(service.get_pending_syncs(7)))
        service.close()
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SHOW TimeZone").fetchone() == ("Asia/Tokyo",)
    assert_index_matches(db, emulator, "products", "products")
    record = emulator.records("products")["1"]
    assert (record["released_on"], record["updated_at"]) == ("2024-03-02", "2024-03-01T10:00:00+00:00")


def test_a_claim_level_loop_and_the_workers_take_turns_on_one_queue(products, db_url, env, emulator):
    """The workers claim, send and settle through the same services: on one queue, a loop of the
    claim-level calls and `workerpool run --drain` take turns, each skips what the other sent when it
    has not changed (the hashes one wrote are the ones the other reads), and every key's log is the
    same whoever synced it."""
    db = products
    settings = settings_for(env)
    db.execute("INSERT INTO products (id, name, price) SELECT g, 'p' || g, g FROM generate_series(1, 120) g")
    rounds = [
        "",  # the inserts above
        "UPDATE products SET price = price + 1",  # every record changes
        "resync",  # every key queued again, no record changes: skipped
    ]
    for change in rounds:
        if change == "resync":
            with psycopg.connect(db_url) as conn:
                enqueue(conn, "products", range(1, 121))
        elif change:
            db.execute(change)
        with DatabaseService(settings.database_url, settings) as service, AlgoliaService(service) as algolia:
            for _ in range(2):  # part of the queue: two claims of 30, settled per claim
                batch = wait_until(lambda: service.claim(30), timeout=10)
                result = algolia.sync(batch)
                assert not result.lost and result.database_error is None
                assert service.settle_batch(result) == len(batch) == 30
                assert [r.queue_id for r in result.results()] == [row.id for row in batch.rows]
            api_name = service.worker_name
        drain(env)  # the workers take the rest
        assert queue_counts(db) == {}

    by_key: dict[str, list[tuple[str, str, str]]] = {}
    for key, action, status, claimed_by in db.execute(
        "SELECT record_id, action, status, claimed_by FROM algolia_sync_log ORDER BY id"
    ).fetchall():
        by_key.setdefault(key, []).append((action, status, "api" if claimed_by == api_name else "worker"))
    assert len(by_key) == 120
    sequences = {tuple((a, s) for a, s, _ in log) for log in by_key.values()}
    assert sequences == {(("partialUpdateObject", "success"), ("partialUpdateObject", "success"), ("skip", "skipped"))}
    last_round = [log[-1][2] for log in by_key.values()]
    assert last_round.count("api") == 60 and last_round.count("worker") == 60
    mixed = [log for log in by_key.values() if len({who for _, _, who in log}) > 1]
    assert mixed  # keys one side sent and the other skipped (or sent again)
    from testing import assert_index_matches

    assert_index_matches(db, emulator, "products", "products")
