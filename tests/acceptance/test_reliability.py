"""Reliability: real processes killed, frozen and cut off; Algolia throttling and failing; Postgres
connections terminated and the server restarted. After each, the index equals the table."""

from __future__ import annotations

import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

from testing import (
    API_KEY,
    Pool,
    assert_index_matches,
    drain,
    queue_counts,
    run_cli,
    wait_until,
)

ITEMS = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, body text, version integer DEFAULT 0)"


@pytest.fixture
def items(db: psycopg.Connection, env: dict[str, str]) -> psycopg.Connection:
    db.execute(ITEMS)
    assert run_cli(env, "watch", "items", "--index", "items").returncode == 0
    return db


def _one_success_per_row(db: psycopg.Connection) -> None:
    """No queue row was acknowledged twice (by different tokens or at all)."""
    dupes = db.execute(
        "SELECT queue_id, count(*) FROM algolia_sync_log WHERE status = 'success' GROUP BY queue_id HAVING count(*) > 1"
    ).fetchall()
    assert dupes == []


def test_sigkill_before_the_algolia_call_recovers_by_lease(items, env, emulator, start_pool):
    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 100) g")
    with psycopg.connect(env["DATABASE_URL"]) as blocker:
        # Hold the table so the worker blocks reading current rows: claimed, not yet sent.
        blocker.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        pool = start_pool(extra_env={"LEASE_TIMEOUT": "2000"})
        wait_until(lambda: queue_counts(db).get("processing") == 100, message="the claim")
        time.sleep(0.3)
        [victim] = pool.worker_pids()
        os.kill(victim, signal.SIGKILL)
        blocker.rollback()
    assert emulator.stats()["record_writes_total"] == 0, "nothing was sent before the kill"
    wait_until(lambda: not queue_counts(db), timeout=30, message="recovery after lease expiry")
    assert pool.stop() == 0
    assert_index_matches(db, emulator, "items", "items")
    _one_success_per_row(db)
    assert db.execute("SELECT min(attempts) FROM algolia_sync_log").fetchone()[0] == 2


def test_sigkill_after_the_call_before_ack_resends_and_acks_once(items, env, emulator, start_pool):
    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 100) g")
    emulator.inject_fault(latency_ms=1500, count=1)
    pool = start_pool(extra_env={"LEASE_TIMEOUT": "2500"})
    wait_until(lambda: queue_counts(db).get("processing") == 100, message="the claim")
    with psycopg.connect(env["DATABASE_URL"]) as blocker:
        # Lock the claimed rows so the ack blocks after Algolia has the batch.
        blocker.execute("SELECT id FROM algolia_sync_queue WHERE status = 'processing' FOR UPDATE").fetchall()
        wait_until(lambda: emulator.stats()["record_writes_total"] == 100, message="the batch to reach Algolia")
        time.sleep(0.3)
        [victim] = pool.worker_pids()
        os.kill(victim, signal.SIGKILL)
        blocker.rollback()
    wait_until(lambda: not queue_counts(db), timeout=30, message="recovery after lease expiry")
    assert pool.stop() == 0
    assert emulator.stats()["record_writes_total"] == 200, "the unacknowledged batch was sent again"
    assert_index_matches(db, emulator, "items", "items")
    _one_success_per_row(db)


def test_frozen_worker_past_its_lease_changes_nothing_when_it_wakes(items, env, emulator, start_pool):
    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'old' || g FROM generate_series(1, 50) g")
    emulator.inject_fault(latency_ms=3000, count=1)  # host-a's request stays in flight while it is frozen
    frozen = start_pool(extra_env={"LEASE_TIMEOUT": "2000", "WORKERPOOL_HOSTNAME": "host-a"})
    wait_until(lambda: queue_counts(db).get("processing") == 50, message="the claim")
    [worker_a] = frozen.worker_pids()
    os.kill(worker_a, signal.SIGSTOP)
    try:
        time.sleep(2.5)  # past the lease
        other = start_pool(extra_env={"WORKERPOOL_HOSTNAME": "host-b"})
        wait_until(lambda: not queue_counts(db), timeout=30, message="host-b to finish host-a's rows")
        db.execute("UPDATE items SET name = 'newer', version = 2 WHERE id = 1")
        wait_until(lambda: emulator.records("items").get("1", {}).get("name") == "newer", message="the newer state")
    finally:
        os.kill(worker_a, signal.SIGCONT)
    wait_until(lambda: frozen.lines("lease_lost"), timeout=20, message="host-a to notice its lease is gone")
    time.sleep(0.5)
    assert emulator.records("items")["1"]["name"] == "newer"
    assert frozen.stop() == 0 and other.stop() == 0
    assert_index_matches(db, emulator, "items", "items")
    _one_success_per_row(db)
    acked_by = {r[0] for r in db.execute("SELECT DISTINCT split_part(claimed_by, ':', 1) FROM algolia_sync_log")}
    assert acked_by == {"host-b"}, "host-a's late ack was refused"


def test_ctrl_c_to_the_process_group_is_one_graceful_stop(items, env, emulator, start_pool):
    """A terminal's Ctrl-C signals every process of the group: still one graceful stop, batch finished."""
    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 200) g")
    emulator.inject_fault(latency_ms=1500, count=1)
    pool = start_pool("--workers", "2", "--batch-size", "200")
    wait_until(lambda: queue_counts(db).get("processing") == 200, message="a batch in flight")
    os.killpg(pool.proc.pid, signal.SIGINT)
    assert pool.proc.wait(timeout=30) == 0
    assert not queue_counts(db), "the in-flight batch was finished and acknowledged, not abandoned"
    assert len(emulator.records("items")) == 200
    assert not pool.lines("forced_stop") and not pool.lines("worker_died")


def test_supervisor_sigkill_takes_its_workers_down_and_a_restart_gives_n(items, env, start_pool):
    pool = start_pool("--workers", "3")
    wait_until(lambda: len(pool.worker_pids()) == 3, message="three workers")
    workers = pool.worker_pids()
    os.kill(pool.proc.pid, signal.SIGKILL)
    pool.proc.wait()

    def all_gone() -> bool:
        alive = 0
        for pid in workers:
            try:
                os.kill(pid, 0)
                alive += 1
            except ProcessLookupError:
                pass
        return alive == 0

    wait_until(all_gone, timeout=5, message="orphaned workers to exit")
    again = start_pool("--workers", "3")
    wait_until(lambda: len(again.worker_pids()) == 3, message="three new workers")
    time.sleep(1.5)
    assert len(again.worker_pids()) == 3
    assert again.stop() == 0


def test_throttling_and_outages_lose_nothing_and_spend_no_retry_on_429(items, env, emulator, start_pool, db_url):
    db = items
    # A database password too, so that both secrets can be checked for in the output.
    db.execute(
        "DO $$ BEGIN CREATE ROLE wp_secret_user LOGIN SUPERUSER PASSWORD 'pg-pass-9d8e7f'; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    dsn = psycopg.conninfo.make_conninfo(db_url, user="wp_secret_user", password="pg-pass-9d8e7f")
    extra = {"DATABASE_URL": dsn, "MAX_RETRIES": "3", "RETRY_BACKOFF": "100", "RETRY_BACKOFF_MAX": "400"}

    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 300) g")
    emulator.inject_fault(status=429, retry_after=1, seconds=4, writes_only=True)
    pool = start_pool("--batch-size", "50", extra_env=extra)
    wait_until(lambda: not queue_counts(db), timeout=60, message="sync after the throttling")
    assert emulator.stats()["rejected"]["429"] >= 2
    assert db.execute("SELECT max(attempts) FROM algolia_sync_log WHERE status = 'success'").fetchone()[0] == 1, (
        "a 429 spent a retry"
    )
    assert pool.lines("throttled")

    # Then Algolia fails for longer than the retries would last: an outage is not the records' fault,
    # so they wait, spending no attempt, with the outage as their last_error, and sync once it ends.
    emulator.inject_fault(status=503, seconds=600, writes_only=True)
    db.execute("UPDATE items SET name = name || '!' WHERE id <= 40")

    def waiting() -> set[str]:
        rows = db.execute("SELECT last_error, attempts FROM algolia_sync_queue WHERE status <> 'failed'").fetchall()
        return {e for e, attempts in rows if e and attempts == 0} if len(rows) == 40 else set()

    errors = wait_until(waiting, timeout=60, message="the rows to wait out the outage, unspent")
    assert all(e.startswith("algolia unreachable: ") for e in errors), errors
    time.sleep(2)  # longer than MAX_RETRIES backoffs of RETRY_BACKOFF_MAX: nothing fails
    assert "failed" not in queue_counts(db)
    emulator.clear_faults()
    wait_until(lambda: not queue_counts(db), timeout=60, message="the rows to sync after the outage")

    # Algolia rejecting the records themselves (a 400 on each request, down to single records) fails them.
    emulator.inject_fault(status=400, seconds=600, writes_only=True)
    db.execute("UPDATE items SET name = name || '?' WHERE id <= 40")
    wait_until(lambda: queue_counts(db).get("failed") == 40, timeout=60, message="the rejected rows to fail")
    errors = {r[0] for r in db.execute("SELECT last_error FROM algolia_sync_queue WHERE status = 'failed'")}
    assert all(e.startswith("algolia 400") for e in errors), errors
    emulator.clear_faults()
    emulator.inject_fault(drop=True, count=2)
    result = run_cli({**env, **extra}, "retry-failed", "--table", "items")
    assert result.returncode == 0 and "returned 40 failed row(s)" in result.stdout
    wait_until(lambda: not queue_counts(db), timeout=60, message="retried rows to sync")
    assert pool.stop() == 0
    assert_index_matches(db, emulator, "items", "items")
    stats = run_cli({**env, **extra}, "stats")
    stats_json = run_cli({**env, **extra}, "stats", "--json")
    assert stats.returncode == 0 and stats_json.returncode == 0 and "items" in stats.stdout
    # The same DSN (user, password, database) with its host moved to an empty directory: a Unix socket
    # that does not exist, refused at once whether the server listens on TCP or on a socket (embedded).
    with tempfile.TemporaryDirectory(prefix="workerpool-nothing-here-") as nowhere:
        parts = {**psycopg.conninfo.conninfo_to_dict(dsn), "host": nowhere}
        parts.pop("hostaddr", None)
        unreachable = psycopg.conninfo.make_conninfo(**parts)
        bad_dsn = run_cli({**env, **extra, "DATABASE_URL": unreachable}, "stats")
    assert bad_dsn.returncode == 2 and "cannot connect to DATABASE_URL" in bad_dsn.stderr and "***" in bad_dsn.stderr
    output = "".join(
        [
            pool.output,
            result.stdout,
            result.stderr,
            stats.stdout,
            stats.stderr,
            stats_json.stdout,
            bad_dsn.stdout,
            bad_dsn.stderr,
        ]
    )
    assert API_KEY not in output and "pg-pass-9d8e7f" not in output
    # Process titles: named, and free of secrets (checked on a live pool below).
    titled = start_pool("--database-url", dsn, extra_env={"DATABASE_URL": ""})
    wait_until(lambda: len(titled.worker_pids()) == 1, message="a titled worker")
    time.sleep(0.5)
    titles = [
        Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        for pid in [titled.proc.pid, *titled.worker_pids()]
    ]
    assert titles[0].startswith("workerpool: supervisor") and titles[1].startswith("workerpool: worker 1"), titles
    assert not any("pg-pass-9d8e7f" in t or API_KEY in t for t in titles), titles
    assert titled.stop() == 0


@pytest.mark.parametrize("precheck", [False, True], ids=["algolia-rejects", "precheck"])
def test_oversized_records_fail_alone_and_the_rest_sync(items, env, emulator, precheck):
    db = items
    db.execute(
        "INSERT INTO items (id, name, body) SELECT g, 'n' || g, "
        "CASE WHEN g IN (17, 500, 999) THEN repeat('x', 20000) ELSE 'small' END FROM generate_series(1, 1000) g"
    )
    limit = "10000" if precheck else "0"
    drain(env, "--batch-size", "1000", extra_env={"MAX_RECORD_BYTES": limit}, rows_fail=True)
    failed = db.execute(
        "SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed' ORDER BY id"
    ).fetchall()
    assert sorted((r[0] for r in failed), key=int) == ["17", "500", "999"]
    for _, error in failed:
        assert ("over MAX_RECORD_BYTES=10000" in error) if precheck else ("is too big" in error), error
    assert len(emulator.records("items")) == 997
    assert db.execute("SELECT count(*) FROM algolia_sync_log WHERE status = 'success'").fetchone()[0] == 997


def test_terminated_connections_mid_run_converge_without_crash_loop(items, env, emulator, start_pool):
    db = items
    pool = start_pool("--workers", "2", "--batch-size", "100")
    wait_until(lambda: len(pool.lines("worker_started")) == 2, message="workers up")
    killed = 0
    for wave in range(5):
        db.execute(
            "INSERT INTO items (id, name) SELECT g, 'w' || %s FROM generate_series(%s::int, %s::int) g "
            "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
            (wave, wave * 500 + 1, wave * 500 + 2000),
        )
        time.sleep(0.3)
        killed += db.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'workerpool%' AND datname = current_database()"
        ).fetchone()[0]
    assert killed >= 5, "connections were terminated in several waves"
    wait_until(lambda: not queue_counts(db), timeout=60, message="the queue to drain")
    assert pool.proc.poll() is None, "the supervisor is still running"
    assert not pool.lines("worker_died"), "no worker crashed"
    assert pool.lines("database_error")
    assert pool.stop() == 0
    assert_index_matches(db, emulator, "items", "items")


def test_postgres_restart_mid_run_converges(emulator):
    """A private embedded server, so the restart touches no other test's database."""
    from pgserver._commands import pg_ctl

    from testing import APP_ID, embedded_server
    from workerpool.ops.migrate import migrate

    with embedded_server() as server:
        dsn = server.get_uri()
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                migrate(conn)
                conn.execute(ITEMS)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("ALGOLIA_")},
                "DATABASE_URL": dsn,
                "ALGOLIA_APP_ID": APP_ID,
                "ALGOLIA_ADMIN_KEY": API_KEY,
                "ALGOLIA_HOSTS": emulator.url,
                "POLLING_INTERVAL": "500",
                "LEASE_TIMEOUT": "5000",
            }
            assert run_cli(env, "watch", "items", "--index", "items").returncode == 0
            pool = Pool(env, "--workers", "2")
            try:
                emulator.inject_fault(latency_ms=150, seconds=6)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("INSERT INTO items (id, name) SELECT g, 'a' FROM generate_series(1, 3000) g")
                wait_until(lambda: pool.lines("batch_synced"), timeout=30, message="work under way")
                pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute("UPDATE items SET name = 'after restart' WHERE id % 7 = 0")
                    wait_until(lambda: not queue_counts(conn), timeout=60, message="the queue to drain after restart")
                    assert pool.proc.poll() is None
                    assert pool.stop() == 0
                    assert_index_matches(conn, emulator, "items", "items")
                assert pool.lines("database_error") or pool.lines("listen_lost"), pool.output[-3000:]
            finally:
                pool.kill_all()
        finally:
            # pgserver's own cleanup does not follow a restarted postmaster: stop it by its data directory.
            pg_ctl(["-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)


def test_boot_error_makes_the_supervisor_give_up_without_spinning(items, env, start_pool, pg_server, db_url):
    pool = start_pool()
    wait_until(lambda: pool.lines("worker_started"), message="the worker to start")
    dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
        try:
            [worker] = pool.worker_pids()
            os.kill(worker, signal.SIGKILL)
            code = pool.proc.wait(timeout=90)
        finally:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
    assert code == 3
    gave_up = pool.lines("gave_up")
    assert len(gave_up) == 1 and "failed to boot 3 times" in gave_up[0]["message"]
    assert len(pool.lines("worker_spawned")) == 4, "one start and three restarts, then it stopped"


def test_two_hosts_one_frozen_the_other_finishes_and_late_acks_change_nothing(items, env, emulator, start_pool):
    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 4000) g")
    emulator.inject_fault(latency_ms=30, seconds=600)
    # One request of 100 rows on the wire per worker: with more, or with claims growing, host-b can
    # drain all 4,000 rows before a slow host-a has booted, and there is nothing left to freeze it over.
    extra = {"LEASE_TIMEOUT": "2000", "REQUESTS_IN_FLIGHT": "1", "BATCH_SIZE_MAX": "100"}
    host_a = start_pool("--workers", "2", "--batch-size", "100", extra_env={**extra, "WORKERPOOL_HOSTNAME": "host-a"})
    host_b = start_pool("--workers", "2", "--batch-size", "100", extra_env={**extra, "WORKERPOOL_HOSTNAME": "host-b"})
    wait_until(lambda: len(host_a.lines("batch_synced")) >= 2, message="host-a at work")
    os.killpg(host_a.proc.pid, signal.SIGSTOP)  # the whole host: supervisor and workers
    try:
        # An ack host-a sent just before the freeze still commits on the server: let it land (well
        # within the 2 s lease, so nothing of host-a's is reclaimed yet) before taking the mark.
        time.sleep(0.5)
        frozen_at = db.execute("SELECT coalesce(max(id), 0) FROM algolia_sync_log").fetchone()[0]
        wait_until(lambda: not queue_counts(db), timeout=90, message="host-b to finish everything")
        db.execute("UPDATE items SET name = 'newest' WHERE id <= 10")
        wait_until(lambda: not queue_counts(db), timeout=30, message="the newest changes")
    finally:
        os.killpg(host_a.proc.pid, signal.SIGCONT)
    emulator.clear_faults()
    time.sleep(2)
    assert host_a.stop() == 0 and host_b.stop() == 0
    assert all(emulator.records("items")[str(i)]["name"] == "newest" for i in range(1, 11))
    assert_index_matches(db, emulator, "items", "items")
    _one_success_per_row(db)
    late = db.execute(
        "SELECT count(*) FROM algolia_sync_log WHERE claimed_by LIKE 'host-a:%%' AND id > %s", (frozen_at,)
    ).fetchone()[0]
    assert late == 0 or host_a.lines("lease_lost"), "host-a acknowledged nothing it no longer held"


@pytest.mark.chaos
def test_chaos_random_kills_faults_and_writers_converge(items, env, emulator, start_pool):
    """Short by default; WORKERPOOL_CHAOS_SECONDS=300 for the long form."""
    db = items
    seconds = float(os.environ.get("WORKERPOOL_CHAOS_SECONDS", "20"))
    rng = random.Random(int(os.environ.get("WORKERPOOL_CHAOS_SEED", "7")))
    db.execute("INSERT INTO items (id, name) SELECT g, 'seed' FROM generate_series(1, 500) g")
    pool = start_pool(
        "--workers",
        "3",
        "--batch-size",
        "50",
        extra_env={
            "LEASE_TIMEOUT": "3000",
            "RETRY_BACKOFF": "100",
            "RETRY_BACKOFF_MAX": "1000",
            "MAX_RETRIES": "1000",
            "RESTART_LIMIT": "1000",
        },
    )
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        r = random.Random(seed)
        try:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                while not stop.is_set():
                    key = r.randint(1, 700)
                    op = r.random()
                    if op < 0.65:
                        conn.execute(
                            "INSERT INTO items (id, name, version) VALUES (%s, %s, 1) ON CONFLICT (id) "
                            "DO UPDATE SET name = EXCLUDED.name, version = items.version + 1",
                            (key, f"s{seed}-{r.random():.5f}"),
                        )
                    elif op < 0.7:  # a bulk statement: hundreds of keys in one inbox row
                        conn.execute(
                            "UPDATE items SET name = %s, version = version + 1 WHERE id BETWEEN %s AND %s",
                            (f"b{seed}-{r.random():.5f}", key, key + 300),
                        )
                    else:
                        conn.execute("DELETE FROM items WHERE id = %s", (key,))
                    time.sleep(r.uniform(0, 0.01))
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in writers:
        t.start()
    kills = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.5, 2.0))
            event = rng.random()
            if event < 0.45:
                pids = pool.worker_pids()
                if pids:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills += 1
            elif event < 0.65:
                emulator.inject_fault(status=rng.choice([500, 502, 503]), count=rng.randint(1, 5))
            elif event < 0.8:
                emulator.inject_fault(status=429, retry_after=1, count=rng.randint(1, 3))
            elif event < 0.9:
                emulator.inject_fault(drop=True, count=rng.randint(1, 3))
            else:
                emulator.inject_fault(latency_ms=rng.randint(50, 800), count=rng.randint(1, 3))
    finally:
        stop.set()
        for t in writers:
            t.join()
    assert not errors, errors
    emulator.clear_faults()
    assert pool.proc.poll() is None, pool.output[-4000:]
    try:
        wait_until(lambda: not queue_counts(db), timeout=120, message="the queue to drain after the chaos")
    except AssertionError:
        stuck = db.execute(
            """SELECT status, attempts, locked_until > now(), next_attempt_at > now(), claimed_by, left(last_error, 120)
                 FROM algolia_sync_queue ORDER BY id LIMIT 10"""
        ).fetchall()
        raise AssertionError(
            f"not drained: {queue_counts(db)}; first rows: {stuck}; pool: {pool.output[-3000:]}"
        ) from None
    assert pool.stop() == 0
    assert kills > 0 and pool.lines("worker_died")
    assert_index_matches(db, emulator, "items", "items")
    _one_success_per_row(db)
    # No two claims of one key were ever live at once: in claim order, no sync of a key was claimed
    # before an earlier one had finished. (One sort, not a self-join: with ~100,000 log rows the
    # join's plan took minutes.)
    overlaps = db.execute("""
        SELECT record_id FROM (
            SELECT record_id, claimed_at,
                   max(synced_at) OVER (PARTITION BY record_id ORDER BY claimed_at, id
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier_end
              FROM algolia_sync_log WHERE status = 'success') s
         WHERE claimed_at < earlier_end
         LIMIT 5""").fetchall()
    assert overlaps == []


def test_a_host_cut_off_by_a_network_partition_errors_out_and_recovers_when_it_heals(items, env, emulator, start_pool):
    """One host in its own network namespace; its network to Postgres and Algolia silently drops every
    packet (no reset). Its rows go to the other host by lease; its own statements fail within the TCP
    liveness limits (not after Linux's ~15-minute retransmission give-up); once the network heals it
    reconnects and syncs again; nothing is acknowledged twice and the index equals the table."""
    from testing import netpartition

    why = netpartition.unavailable()
    if why:
        pytest.skip(why)
    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 3000) g")
    emulator.inject_fault(latency_ms=50, seconds=600)
    ns = netpartition.Namespace()
    relays: list[netpartition.Relay] = []
    try:
        info = psycopg.conninfo.conninfo_to_dict(env["DATABASE_URL"])
        host, port = info.get("host") or "127.0.0.1", int(info.get("port") or 5432)
        pg_target = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        pg_relay = netpartition.Relay(ns.host_ip, pg_target)
        emu_relay = netpartition.Relay(ns.host_ip, ("127.0.0.1", int(emulator.url.rsplit(":", 1)[1])))
        relays += [pg_relay, emu_relay]
        cut_env = {
            "DATABASE_URL": psycopg.conninfo.make_conninfo(
                env["DATABASE_URL"], host=ns.host_ip, port=str(pg_relay.port)
            ),
            "ALGOLIA_HOSTS": f"http://{ns.host_ip}:{emu_relay.port}",
            "LEASE_TIMEOUT": "3000",
            "BATCH_SIZE_MAX": "20",
            "WORKERPOOL_HOSTNAME": "host-cut",
        }
        cut = start_pool("--workers", "1", "--batch-size", "20", extra_env=cut_env, prefix=ns.prefix)
        ok = start_pool(
            "--workers",
            "1",
            "--batch-size",
            "20",
            extra_env={"LEASE_TIMEOUT": "3000", "BATCH_SIZE_MAX": "20", "WORKERPOOL_HOSTNAME": "host-ok"},
        )
        wait_until(lambda: len(cut.lines("batch_synced")) >= 2, message="the namespaced host at work")
        ns.partition()
        cut_at = time.monotonic()
        wait_until(lambda: not queue_counts(db), timeout=120, message="host-ok to finish everything")
        # The cut host notices: a statement fails (tcp_user_timeout / keepalives), it does not hang.
        wait_until(
            lambda: cut.lines("database_error"),
            timeout=75,
            message="the cut host's database calls to fail instead of hanging",
        )
        detected_s = time.monotonic() - cut_at
        ns.heal()
        assert ok.stop() == 0
        emulator.clear_faults()
        db.execute("UPDATE items SET name = 'after the partition' WHERE id <= 10")
        wait_until(lambda: not queue_counts(db), timeout=90, message="the healed host to sync alone")
        assert cut.stop() == 0
    finally:
        ns.close()
        for r in relays:
            r.close()
    assert detected_s < 75
    assert all(emulator.records("items")[str(i)]["name"] == "after the partition" for i in range(1, 11))
    assert_index_matches(db, emulator, "items", "items")
    _one_success_per_row(db)
    last = db.execute(
        "SELECT claimed_by FROM algolia_sync_log WHERE record_id = '1' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert last[0].startswith("host-cut:"), last  # the cut host, back on the network, did that last sync


def test_tcp_liveness_defaults_apply_unless_database_url_sets_its_own(db_url):
    from workerpool.db.connection import connect, make_pool

    def liveness(conn: psycopg.Connection) -> dict[str, str]:
        return {
            i.keyword.decode(): (i.val or b"").decode()
            for i in conn.pgconn.info
            if i.keyword.decode().startswith(("keepalives", "tcp_user_timeout"))
        }

    with connect(db_url) as conn:
        assert liveness(conn) == {
            "keepalives": "1",
            "keepalives_idle": "10",
            "keepalives_interval": "5",
            "keepalives_count": "3",
            "tcp_user_timeout": "30000",
        }
    own = psycopg.conninfo.make_conninfo(db_url, keepalives_idle="60", tcp_user_timeout="5000")
    pool = make_pool(own, 1, "liveness-test")
    try:
        with pool.connection() as conn:
            got = liveness(conn)
    finally:
        pool.close()
    assert got["keepalives_idle"] == "60" and got["tcp_user_timeout"] == "5000" and got["keepalives_count"] == "3"


def test_acknowledging_stays_linear_with_many_failed_rows_and_stale_statistics(items):
    """An ack drops earlier failures of the keys it acknowledges. With statistics taken before the
    failures piled up, a plan comparing every failed row with every acknowledged one would make each
    ack quadratic; the probe stays per key. Counted as index entries read, not timed."""
    from workerpool.runtime import queue

    db = items
    db.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(1, 300) g")
    assert queue.spill(db, 1000) == 300  # a bulk statement: its keys go through the inbox
    db.execute("ANALYZE algolia_sync_queue")  # nothing has failed yet
    db.execute("ALTER TABLE algolia_sync_queue SET (autovacuum_enabled = false)")  # and it stays that way
    db.execute("""INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, last_error)
                  SELECT 'items', 'gone-' || g, 'UPDATE', 'failed', 'x' FROM generate_series(1, 20000) g""")
    db.execute("""INSERT INTO algolia_sync_queue (table_name, record_id, operation, status, last_error)
                  VALUES ('items', '5', 'UPDATE', 'failed', 'an earlier failure of key 5')""")

    def entries_read() -> int:
        db.execute("SELECT pg_stat_force_next_flush()")
        db.execute("SELECT pg_stat_clear_snapshot()")
        return db.execute(
            "SELECT sum(idx_tup_read)::bigint FROM pg_stat_user_indexes WHERE relname = 'algolia_sync_queue'"
        ).fetchone()[0]

    claim = queue.claim_batch(db, 300, 60_000, "test", time.monotonic())
    assert claim is not None and len(claim.rows) == 300
    done = [
        SimpleNamespace(row=r, index="items", action="updateObject", hash=b"h" * 16, shape=b"s" * 8, stored=None)
        for r in claim.rows
    ]
    before = entries_read()
    assert queue.ack(db, claim.token, done) == 300
    read = entries_read() - before
    assert read < 10 * 300, f"the ack read {read} queue index entries for 300 rows"
    failed = dict(
        db.execute(
            "SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed' "
            "AND record_id NOT LIKE 'gone-%%'"
        ).fetchall()
    )
    assert failed == {}  # key 5's earlier failure is superseded by its successful sync
    assert db.execute("SELECT count(*) FROM algolia_sync_queue WHERE status = 'failed'").fetchone()[0] == 20000
