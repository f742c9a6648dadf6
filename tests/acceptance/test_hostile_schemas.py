"""Real schemas and hostile data: watching a table never breaks the application's writes, and one bad
row never stops the others.

A zoo of awkward tables (columns named like trigger aliases, mixed case, other schemas, partitions,
generated columns, domains, enums and arrays of them, dozens of columns, date/time keys, nullable
keys, keys too long for an objectID, values Python cannot hold) written from sessions with
different TimeZone, DateStyle and IntervalStyle, synced by real `workerpool run` processes into the
emulator. Every application statement must succeed, every good row converge with exactly one
object, every bad row fail alone with a readable last_error, and the pool never give up.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from testing import assert_index_matches, drain, queue_counts, run_cli, spill_all, wait_until

# Sessions a writer may have: the objectID and the record must not depend on any of them.
SESSIONS = [
    {"TimeZone": "UTC", "DateStyle": "ISO, MDY", "IntervalStyle": "postgres"},
    {"TimeZone": "Asia/Tokyo", "DateStyle": "SQL, DMY", "IntervalStyle": "sql_standard"},
    {"TimeZone": "America/New_York", "DateStyle": "German", "IntervalStyle": "iso_8601"},
    {"TimeZone": "Pacific/Chatham", "DateStyle": "Postgres, DMY", "IntervalStyle": "postgres_verbose"},
]


def session(db_url: str, settings: dict[str, str]) -> psycopg.Connection:
    conn = psycopg.connect(db_url, autocommit=True)
    for name, value in settings.items():
        conn.execute(f"SET {name} = '{value}'")
    return conn


def watch(env: dict[str, str], *args: str) -> None:
    result = run_cli(env, "watch", *args)
    assert result.returncode == 0, result.stdout + result.stderr


def failed_rows(db: psycopg.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall())


# ---- 1. capture never breaks the application's writes ------------------------------------------


def test_columns_named_like_the_trigger_aliases_never_break_writes(db, db_url, env, emulator):
    db.execute("""CREATE TABLE brands (id int PRIMARY KEY, n text, o text)""")
    db.execute("""CREATE TABLE items (id int PRIMARY KEY, n int, o text, r text, s int, k text, c int, op text,
                                      chunk int, changes int, gone text, changed text, brand_id int)""")
    db.execute("CREATE INDEX ON items (brand_id)")
    db.execute("INSERT INTO brands VALUES (1, 'n', 'o')")
    watch(env, "items", "--index", "items", "--related", "brands:brand_id")
    for settings in SESSIONS:
        with session(db_url, settings) as app:
            app.execute(
                "INSERT INTO items VALUES (1, 1, 'o', 'r', 1, 'k', 1, 'op', 1, 1, 'g', 'c', 1) "
                "ON CONFLICT (id) DO UPDATE SET n = items.n + 1, o = excluded.o"
            )
            app.execute("UPDATE items SET n = n + 1, o = o || 'x'")
            app.execute("UPDATE brands SET n = n || 'x', o = o || 'y'")
            app.execute(
                "INSERT INTO items SELECT g, g, 'o', 'r', g, 'k', g, 'op', g, g, 'g', 'c', 1 "
                "FROM generate_series(2, 1500) g ON CONFLICT (id) DO UPDATE SET n = excluded.n + items.n"
            )
    drain(env)
    assert_index_matches(db, emulator, "items", "items")
    # A TRUNCATE of the related table re-enqueues every row that pointed at it.
    db.execute("INSERT INTO items (id, brand_id) VALUES (9999, 1), (10000, NULL)")
    drain(env)
    db.execute("TRUNCATE brands")
    assert queue_counts(db) == {"inbox": 1}  # brand 1, which the spill turns into the rows pointing at it
    spill_all(db)
    assert queue_counts(db) == {"pending": 1501}  # 1..1500 and 9999, not the row without a brand
    drain(env)


def test_ddl_on_a_watched_table_never_breaks_the_applications_writes(db, env, emulator):
    db.execute("CREATE TABLE stock (id int PRIMARY KEY, name text, qty int)")
    watch(env, "stock", "--index", "stock", "--attributes", "name")
    db.execute("INSERT INTO stock VALUES (1, 'a', 1), (2, 'b', 2)")
    drain(env)

    db.execute("ALTER TABLE stock RENAME TO inventory")
    db.execute("ALTER TABLE inventory RENAME COLUMN id TO sku_id")
    db.execute("ALTER TABLE inventory RENAME COLUMN name TO title")
    db.execute("ALTER TABLE inventory ALTER COLUMN sku_id TYPE bigint")
    db.execute("INSERT INTO inventory VALUES (3, 'c', 3)")
    db.execute("UPDATE inventory SET title = 'a2' WHERE sku_id = 1")
    db.execute("UPDATE inventory SET qty = 99 WHERE sku_id = 2")  # not a record attribute: nothing to send
    db.execute("DELETE FROM inventory WHERE sku_id = 2")
    db.execute("INSERT INTO inventory VALUES (4, 'd', 4) ON CONFLICT (sku_id) DO UPDATE SET title = excluded.title")
    drain(env)
    assert {k: r["title"] for k, r in emulator.records("stock").items()} == {"1": "a2", "3": "c", "4": "d"}

    # `watch` under the new name takes the registration over, with what waits under the old one.
    db.execute("INSERT INTO inventory VALUES (5, 'e', 5)")
    watch(env, "inventory", "--index", "stock", "--attributes", "title")
    assert db.execute("SELECT array_agg(table_name) FROM algolia_index_config").fetchone()[0] == ["inventory"]
    db.execute("INSERT INTO inventory VALUES (6, 'f', 6)")
    drain(env)
    assert set(emulator.records("stock")) == {"1", "3", "4", "5", "6"}

    # Dropping the key column stops the capture, never the application's writes.
    db.execute("ALTER TABLE inventory DROP COLUMN sku_id")
    db.execute("INSERT INTO inventory (title, qty) VALUES ('e', 5)")
    db.execute("TRUNCATE inventory")
    enabled, reason = db.execute("SELECT enabled, disabled_reason FROM algolia_index_config").fetchone()
    assert not enabled and "key column" in reason and "workerpool watch" in reason


def test_every_kind_of_table_a_user_can_create_is_watched_or_refused(db, db_url, env, emulator):
    db.execute("CREATE SCHEMA shop")
    db.execute("CREATE TYPE shop.colour AS ENUM ('red', 'green')")
    db.execute("CREATE DOMAIN shop.sku AS text CHECK (VALUE <> '')")
    db.execute(f"""CREATE TABLE shop."Mixed Case" (
                       "Sku" shop.sku PRIMARY KEY, "Colour" shop.colour, colours shop.colour[],
                       price numeric(8,2), doubled numeric GENERATED ALWAYS AS (price * 2) STORED,
                       {", ".join(f"c{i} int DEFAULT {i}" for i in range(40))})""")
    db.execute(
        "CREATE TABLE events (id bigint, day date NOT NULL, v text, PRIMARY KEY (id, day)) PARTITION BY RANGE (day)"
    )
    db.execute("CREATE UNIQUE INDEX ON events (id, day)")
    db.execute("CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    db.execute("CREATE TABLE ev (id bigint PRIMARY KEY, day date NOT NULL, v text) PARTITION BY RANGE (id)")
    db.execute("CREATE TABLE ev_1 PARTITION OF ev FOR VALUES FROM (0) TO (100)")
    watch(env, "shop.Mixed Case", "--index", "mixed")
    watch(env, "ev", "--index", "ev")
    watch(env, "events", "--index", "events")  # keyed (id, day): a composite key
    for settings in SESSIONS:
        with session(db_url, settings) as app:
            app.execute("""INSERT INTO shop."Mixed Case" ("Sku", "Colour", colours, price)
                           VALUES ('a', 'red', '{red,green}', 1.5), ('b', 'green', '{}', 2)
                           ON CONFLICT ("Sku") DO UPDATE SET price = excluded.price + 1""")
            app.execute("INSERT INTO ev VALUES (1, '2024-01-02', 'x') ON CONFLICT (id) DO UPDATE SET v = ev.v || 'y'")
            app.execute(
                "INSERT INTO events VALUES (1, '2024-01-02', 'x')"
                " ON CONFLICT (id, day) DO UPDATE SET v = events.v || 'y'"
            )
    db.execute("CREATE TABLE ev_2 (id bigint NOT NULL, day date NOT NULL, v text)")
    db.execute("ALTER TABLE ev ATTACH PARTITION ev_2 FOR VALUES FROM (100) TO (200)")  # attached later
    db.execute("INSERT INTO ev VALUES (150, '2024-05-05', 'later')")
    db.execute("CREATE TABLE ev_3 PARTITION OF ev FOR VALUES FROM (200) TO (300)")  # created later
    db.execute("INSERT INTO ev_1 VALUES (5, '2024-01-05', 'direct')")  # straight into partitions
    db.execute("INSERT INTO ev_3 VALUES (250, '2024-01-05', 'direct')")
    db.execute("UPDATE ev_2 SET v = 'direct' WHERE id = 150")
    drain(env)
    mixed = emulator.records("mixed")
    assert set(mixed) == {"a", "b"}
    assert mixed["a"]["Colour"] == "red" and mixed["a"]["colours"] == ["red", "green"]
    assert mixed["a"]["doubled"] == mixed["a"]["price"] * 2 and mixed["a"]["c39"] == 39
    assert set(emulator.records("ev")) == {"1", "5", "150", "250"}
    assert_index_matches(db, emulator, "ev", "ev")
    assert set(emulator.records("events")) == {"{1,2024-01-02}"}  # the same key text under every DateStyle
    assert_index_matches(db, emulator, "events", "events", ["id", "day"])
    assert not failed_rows(db)


# ---- 2. keys: canonical, NULL, too long ------------------------------------------------------------


def test_keys_do_not_depend_on_the_writing_session(db, db_url, env, emulator):
    db.execute("CREATE TABLE slots (starts timestamptz PRIMARY KEY, label text)")
    db.execute("CREATE TABLE days (day date PRIMARY KEY, label text)")
    db.execute("CREATE TABLE spans (span interval PRIMARY KEY, label text)")
    watch(env, "slots", "--index", "slots")
    watch(env, "days", "--index", "days")
    watch(env, "spans", "--index", "spans")
    for n, settings in enumerate(SESSIONS):
        with session(db_url, settings) as app:
            if n == 0:
                app.execute("INSERT INTO slots VALUES ('2024-03-01 10:00:00+00', 'x')")
                app.execute("INSERT INTO days VALUES ('2024-03-02', 'x')")
                app.execute("INSERT INTO spans VALUES ('1 day 02:00:00', 'x')")
            app.execute("UPDATE slots SET label = label || %s", (str(n),))
            app.execute("UPDATE days SET label = label || %s", (str(n),))
            app.execute("UPDATE spans SET label = label || %s", (str(n),))
    drain(env)
    assert list(emulator.records("slots")) == ["2024-03-01 10:00:00+00"]
    assert list(emulator.records("days")) == ["2024-03-02"]
    assert list(emulator.records("spans")) == ["1 day 02:00:00"]
    with session(db_url, SESSIONS[1]) as app:
        app.execute("DELETE FROM slots")
        app.execute("DELETE FROM days")
    drain(env)
    assert emulator.records("slots") == {} and emulator.records("days") == {}


def test_key_types_without_one_text_form_are_refused(db, env):
    db.execute("CREATE TABLE f (id float8 PRIMARY KEY)")
    db.execute("CREATE TABLE m (id money PRIMARY KEY)")
    for table in ("f", "m"):
        result = run_cli(env, "watch", table, "--index", table)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "not canonical" in result.stderr


def test_null_and_overlong_keys_fail_alone_and_never_block_a_claim(db, env, emulator):
    db.execute("CREATE TABLE skus (sku text UNIQUE, name text)")
    watch_result = run_cli(env, "watch", "skus", "--index", "skus", "--key", "sku")
    assert watch_result.returncode == 0 and "nullable" in watch_result.stderr
    db.execute("INSERT INTO skus VALUES (NULL, 'no key'), ('a', 'A'), (repeat('x', 3000), 'long')")
    db.execute("UPDATE skus SET name = name || '!'")
    db.execute("INSERT INTO skus VALUES ('b', 'B')")
    # An inbox row left with a NULL key by older capture code is dropped, not retried forever.
    db.execute(
        "INSERT INTO algolia_sync_inbox (table_name, operation, keys, record_ids)"
        " VALUES ('skus', 'UPDATE', 1, '{NULL}')"
    )
    drain(env, rows_fail=True)  # the overlong key
    assert set(emulator.records("skus")) == {"a", "b"}
    [(record_id, error)] = failed_rows(db).items()
    assert record_id.startswith("xxxx") and "3000 bytes" in error and "objectID" in error


# ---- 3 and 5. values: every value maps, or fails alone ---------------------------------------------


def test_values_python_cannot_hold_map_as_documented_and_never_crash_a_worker(db, db_url, env, emulator):
    db.execute("""CREATE TABLE odd (id int PRIMARY KEY, d date, ts timestamp, tz timestamptz, t time, ttz timetz,
                                    j jsonb, big bigint, f float8, iv interval, n numeric)""")
    db.execute("CREATE TABLE fine (id int PRIMARY KEY, v text)")
    watch(env, "odd", "--index", "odd")
    watch(env, "fine", "--index", "fine")
    with session(db_url, SESSIONS[2]) as app:
        app.execute("""INSERT INTO odd VALUES
            (1, 'infinity', '-infinity', 'infinity', '24:00', '10:00+02',
             '{"v": 1e400, "big": 123456789012345678901234567890}', 9007199254740993, 'NaN', '178000000 years', 'NaN'),
            (2, '10000-01-01', '0044-03-15 10:00 BC', '2024-03-01 10:00+05', '23:59:59.5', '00:00-03:30',
             '{"ok": 1.5}', 5, 'Infinity', '1 day', 1e-30),
            (3, '2024-01-01', '2024-01-01 00:00', NULL, NULL, NULL, '[1, 2]', -9007199254740993, 2.5, '-1 hour',
             12.5)""")
        app.execute("INSERT INTO fine SELECT g, 'v' FROM generate_series(1, 20) g")
    result = drain(env)
    assert "worker_died" not in result.stdout
    odd = emulator.records("odd")
    assert odd["1"]["d"] == "infinity" and odd["1"]["ts"] == "-infinity" and odd["1"]["tz"] == "infinity"
    assert odd["1"]["t"] == "24:00:00" and odd["1"]["ttz"] == "10:00:00+02:00"
    # jsonb keeps 1e400 as a numeric: every digit arrives, as text.
    assert odd["1"]["j"] == {"v": "1" + "0" * 400, "big": "123456789012345678901234567890"}
    assert odd["1"]["big"] == "9007199254740993" and odd["3"]["big"] == "-9007199254740993"
    assert odd["1"]["f"] is None and odd["2"]["f"] is None and odd["3"]["f"] == 2.5
    assert odd["1"]["n"] == "NaN" and odd["3"]["n"] == 12.5
    assert odd["2"]["d"] == "10000-01-01" and odd["2"]["ts"] == "0044-03-15 10:00:00 BC"
    assert odd["2"]["tz"] == "2024-03-01T05:00:00+00:00" and odd["2"]["ttz"] == "00:00:00-03:30"
    assert odd["1"]["iv"] == 178_000_000 * 365 * 86400.0 and odd["2"]["iv"] == 86400.0  # a year of 365 days
    assert len(emulator.records("fine")) == 20
    assert not failed_rows(db)


def test_a_row_that_cannot_be_read_fails_alone_and_a_dropped_table_fails_only_its_own_rows(db, env, emulator):
    db.execute("CREATE TABLE parts (id int PRIMARY KEY, qty int)")
    db.execute("CREATE VIEW part_records AS SELECT id, 100 / (qty - 13) AS ratio FROM parts")
    db.execute("CREATE TABLE doomed (id int PRIMARY KEY)")
    db.execute("CREATE TABLE fine (id int PRIMARY KEY)")
    watch(env, "parts", "--index", "parts", "--source", "part_records")
    watch(env, "doomed", "--index", "doomed")
    watch(env, "fine", "--index", "fine")
    db.execute("INSERT INTO parts SELECT g, g FROM generate_series(1, 40) g")
    db.execute("INSERT INTO doomed SELECT generate_series(1, 10)")
    db.execute("INSERT INTO fine SELECT generate_series(1, 30)")
    db.execute("DROP TABLE doomed")
    drain(env, extra_env={"BATCH_SIZE": "200", "MAX_RETRIES": "2", "RETRY_BACKOFF": "10"}, rows_fail=True)
    assert len(emulator.records("parts")) == 39 and "13" not in emulator.records("parts")
    assert len(emulator.records("fine")) == 30
    failed = failed_rows(db)
    assert "division by zero" in failed.pop("13")
    assert sorted(failed, key=int) == [str(i) for i in range(1, 11)]
    assert all("doomed" in e and "does not exist" in e for e in failed.values())
    # The innocent rows spent one attempt each: the claim's own.
    assert (
        db.execute("SELECT max(attempts) FROM algolia_sync_log WHERE table_name IN ('parts', 'fine')").fetchone()[0]
        == 1
    )


# ---- 6. a transform that hangs ---------------------------------------------------------------------


def test_a_hanging_transform_fails_its_record_and_the_worker_goes_on(db, env, emulator, tmp_path):
    (tmp_path / "hangs.py").write_text(
        textwrap.dedent("""
        import time

        def shape(record):
            if record["id"] == 3:
                while True:
                    try:
                        time.sleep(1)
                    except Exception:
                        pass
            return record
    """)
    )
    env = {**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"}
    db.execute("CREATE TABLE things (id int PRIMARY KEY)")
    watch(env, "things", "--index", "things", "--transform", "hangs:shape")
    db.execute("INSERT INTO things SELECT generate_series(1, 6)")
    result = drain(env, extra_env={"TRANSFORM_TIMEOUT": "300"}, rows_fail=True)
    assert "worker_died" not in result.stdout
    assert set(emulator.records("things")) == {"1", "2", "4", "5", "6"}
    assert "TRANSFORM_TIMEOUT=300" in failed_rows(db)["3"]


# ---- 7. auth errors are not record errors ----------------------------------------------------------


def _healthz(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except OSError:  # not listening yet
        return 0, {}


def test_a_revoked_key_spends_no_attempt_and_the_pool_resumes_after_rotation(db, env, emulator, start_pool, free_port):
    db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    watch(env, "notes", "--index", "notes")
    good = emulator.state.api_key
    emulator.state.api_key = "rotated-key-1"
    try:
        db.execute("INSERT INTO notes SELECT g, 'b' FROM generate_series(1, 8) g")
        pool = start_pool(extra_env={"HEALTH_PORT": str(free_port), "MAX_RETRIES": "2", "WORKERS": "2"})
        wait_until(lambda: pool.lines("algolia_auth_failed"), timeout=30, message="an auth error line")
        wait_until(lambda: _healthz(free_port)[0] == 503, timeout=30, message="/healthz 503")
        _, body = _healthz(free_port)
        assert any("ALGOLIA_ADMIN_KEY" in r for r in body["reasons"])
        time.sleep(5)  # several attempts' worth of retries
        counts = queue_counts(db)
        assert counts.get("failed", 0) == 0 and counts.get("pending", 0) + counts.get("processing", 0) == 8
        assert db.execute("SELECT max(attempts) FROM algolia_sync_queue").fetchone()[0] <= 1
        assert len(pool.lines("algolia_auth_failed")) <= 2  # one line per worker, not one per batch
    finally:
        emulator.state.api_key = good
    wait_until(lambda: len(emulator.records("notes")) == 8, timeout=60, message="the rows after the key works")
    wait_until(lambda: _healthz(free_port)[0] == 200, timeout=30, message="/healthz 200 again")
    assert pool.lines("algolia_auth_ok")
    assert pool.stop() == 0


def test_healthz_runs_one_database_check_at_a_time(db, env, start_pool, free_port):
    import threading

    pool = start_pool(extra_env={"HEALTH_PORT": str(free_port)})
    wait_until(lambda: _healthz(free_port)[0] == 200, timeout=30, message="/healthz up")
    most = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal most
        with psycopg.connect(db.info.dsn, autocommit=True) as watcher:
            while not stop.is_set():
                n = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'workerpool:health'"
                ).fetchone()[0]
                most = max(most, n)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for _ in range(3):
            burst = [threading.Thread(target=_healthz, args=(free_port,)) for _ in range(30)]
            for t in burst:
                t.start()
            for t in burst:
                t.join()
            time.sleep(1.1)  # past the shared result's life: the next burst checks again, once
    finally:
        stop.set()
        sampler.join()
    assert most <= 1, f"{most} health connections at once"
    assert pool.stop() == 0


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
