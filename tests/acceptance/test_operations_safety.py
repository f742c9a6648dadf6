"""Operations that say what they do, and fail in one line: secrets, table names, unwatch, the
schema version, expected failures, the emulator's boundaries and the supervisor's crash-loop rule.

Real Postgres, the emulator over real HTTP, real `workerpool` processes: no mocks.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import orjson
import psycopg
import pytest

from testing import (
    API_KEY,
    PRODUCTS,
    drain,
    queue_counts,
    run_cli,
    spill_all,
    wait_until,
    workerpool_cmd,
)
from workerpool.ops.migrate import applied_versions, migrate, migrations

PASSWORD = "pg-secret-7c1e4b"  # trust auth accepts and ignores it; it must never be printed

# Every command that talks to the database, with arguments that are valid on a migrated database.
DB_COMMANDS = [
    ("stats",),
    ("watch", "products", "--index", "products"),
    ("unwatch", "products"),
    ("retry-failed",),
    ("cleanup",),
    ("reindex", "products"),
    ("verify", "products"),
    ("settings", "push", "--dry-run"),
    ("run", "--drain"),
]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The command exited `code` with exactly one line on stderr and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.stderr[-2000:]}"
    return lines[0]


def _url_form(db_url: str, **query: str) -> str:
    """The database of `db_url` as a postgresql:// URL with extra query parameters."""
    from urllib.parse import quote

    parts = psycopg.conninfo.conninfo_to_dict(db_url)
    host = parts.get("host", "")
    if host.startswith("/"):  # a Unix socket directory (the embedded server): a query parameter
        query = {"host": quote(host, safe=""), **({"port": parts["port"]} if "port" in parts else {}), **query}
        netloc = ""
    else:
        netloc = host + (f":{parts['port']}" if "port" in parts else "")
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"postgresql://{parts.get('user', 'postgres')}@{netloc}/{parts['dbname']}" + (f"?{params}" if params else "")


# ---- 1. secrets --------------------------------------------------------------------------------


def test_no_command_prints_the_database_password_or_the_admin_key(
    products, env, emulator, start_pool, db_url, pg_server
):
    db = products
    port = _closed_port()
    outputs: list[str] = []

    def cli(extra: dict[str, str], *args: str, code: int | None = None) -> subprocess.CompletedProcess:
        result = run_cli({**env, **extra}, *args, timeout=60)
        outputs.extend([result.stdout, result.stderr])
        if code is not None:
            _one_line_error(result, code)
        return result

    # Unreachable, in every DSN form, each printed redacted in its one error line.
    unreachable = [
        f"postgresql://postgres@127.0.0.1:{port}/nodb?password={PASSWORD}&connect_timeout=3",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/nodb?connect_timeout=3",
        f"host=127.0.0.1 port={port} dbname=nodb user=postgres password={PASSWORD} connect_timeout=3",
        f"host=127.0.0.1 port={port} dbname=nodb user=postgres password='{PASSWORD} x' connect_timeout=3",
        f"password={PASSWORD} host",  # not even a valid key=value string
    ]
    for dsn in unreachable:
        for command in (("stats",), ("migrate",), ("run", "--drain")):
            result = cli({"DATABASE_URL": dsn}, *command, code=2)
            assert "***" in result.stderr or "missing" in result.stderr, result.stderr
    # The same on the command line, and with the password in PGPASSWORD.
    cli({}, "stats", "--database-url", unreachable[0], code=2)
    cli({"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/nodb", "PGPASSWORD": PASSWORD}, "stats", code=2)
    cli({"PGPASSWORD": PASSWORD}, "verify", "nope", code=2)

    # Reachable (trust auth ignores the password): commands and a pool whose database fails under it.
    for dsn in (_url_form(db_url, password=PASSWORD), f"{db_url} password={PASSWORD}"):
        good = {"DATABASE_URL": dsn, "PGPASSWORD": PASSWORD, "LOG_LEVEL": "DEBUG"}
        assert cli(good, "stats").returncode == 0
        assert cli(good, "watch", "products", "--index", "products").returncode == 0
        db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 20) g")
        pool = start_pool(extra_env=good)
        wait_until(lambda: not queue_counts(db), message="the first rows to sync")
        dbname = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
            try:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND application_name LIKE 'workerpool:%%'",
                    (dbname,),
                )
                wait_until(
                    lambda pool=pool: pool.lines("listen_failed") or pool.lines("database_error"),
                    message="the pool to log its database errors",
                )
            finally:
                admin.execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
        db.execute("UPDATE products SET name = name || '!'")
        wait_until(lambda: not queue_counts(db), timeout=60, message="the pool to recover and sync")
        assert pool.stop() == 0
        outputs.append(pool.output)
        assert "***" in pool.output, "the pool's error lines name the (redacted) DSN"

    leaked = [o for o in outputs if PASSWORD in o or API_KEY in o]
    assert not leaked, leaked[0][-3000:]


def test_redact_dsn_covers_every_form():
    from workerpool.config import dsn_passwords, redact_dsn

    for dsn, redacted in [
        (f"postgresql://u:{PASSWORD}@h:5432/d", "postgresql://u:***@h:5432/d"),
        (f"postgresql://u@h/d?sslmode=disable&password={PASSWORD}", "postgresql://u@h/d?sslmode=disable&password=***"),
        (f"host=h password={PASSWORD} dbname=d", "host=h password=*** dbname=d"),
        (f"host=h password = '{PASSWORD} \\' x' dbname=d", "host=h password=*** dbname=d"),
    ]:
        assert redact_dsn(dsn) == redacted
        assert PASSWORD in "".join(dsn_passwords(dsn))
    assert redact_dsn("postgresql://postgres@h/postgres") == "postgresql://postgres@h/postgres"


# ---- 2. tables named as `watch` takes them ---------------------------------------------------


def _fail_everything(db: psycopg.Connection) -> None:
    spill_all(db)
    db.execute("UPDATE algolia_sync_queue SET status = 'failed', last_error = 'made to fail by the test'")


def test_every_command_taking_a_table_resolves_it_like_watch(products, env, emulator):
    db = products
    db.execute('CREATE TABLE "My Table" (id integer PRIMARY KEY, name text)')
    assert run_cli(env, "watch", "My Table", "--index", "my_table").returncode == 0
    db.execute("""INSERT INTO "My Table" SELECT g, 'n' || g FROM generate_series(1, 3) g""")
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 2) g")

    for name, expected in [("My Table", 3), ('"My Table"', 3), ('public."My Table"', 3), ("public.products", 2)]:
        _fail_everything(db)
        result = run_cli(env, "retry-failed", "--table", name)
        assert result.returncode == 0 and f"returned {expected} failed row(s)" in result.stdout, (
            name,
            result.stdout,
            result.stderr,
        )
    _one_line_error(run_cli(env, "retry-failed", "--table", "nope"), 2)

    drain(env)
    assert run_cli(env, "reindex", '"My Table"').returncode == 0
    assert run_cli(env, "reindex", "public.products").returncode == 0
    drain(env)
    for name in ("My Table", 'public."My Table"', "public.products"):
        result = run_cli(env, "verify", name)
        assert result.returncode == 0, (name, result.stdout, result.stderr)
    result = run_cli(env, "unwatch", 'public."My Table"')
    assert result.returncode == 0 and 'no longer watching "My Table"' in result.stdout, result.stdout + result.stderr


# ---- 3. unwatch --------------------------------------------------------------------------------


def test_unwatch_says_what_it_would_drop_and_needs_a_flag_to_drop_it(products, env):
    db = products
    db.execute("INSERT INTO products (id, name) SELECT g, 'p' || g FROM generate_series(1, 3) g")
    spill_all(db)  # two in the queue, one (the delete) left in the inbox
    db.execute("DELETE FROM products WHERE id = 3")
    db.execute("UPDATE algolia_sync_queue SET status = 'failed' WHERE record_id = '1'")  # kept either way

    line = _one_line_error(run_cli(env, "unwatch", "products"), 2)
    assert "2 pending change(s)" in line and "--drop-pending" in line, line
    assert db.execute("SELECT count(*) FROM algolia_index_config").fetchone()[0] == 1
    db.execute("INSERT INTO products (id, name) VALUES (4, 'still captured')")
    assert queue_counts(db) == {"pending": 2, "failed": 1, "inbox": 2}  # key 3 is in both

    result = run_cli(env, "unwatch", "products", "--drop-pending")
    assert result.returncode == 0, result.stderr
    assert "dropped 3 pending change(s)" in result.stdout and "1 failed row(s) kept" in result.stdout, result.stdout
    assert queue_counts(db) == {"failed": 1}

    db.execute(PRODUCTS.replace("products", "other"))
    assert run_cli(env, "watch", "other", "--index", "other").returncode == 0
    result = run_cli(env, "unwatch", "other")
    assert result.returncode == 0 and "no pending changes" in result.stdout, result.stdout + result.stderr


# ---- 4. the schema version -------------------------------------------------------------------


def _code_version() -> int:
    return max(m.version for m in migrations())


@pytest.mark.parametrize("state", ["unmigrated", "partly migrated", "newer"])
def test_every_command_checks_the_schema_version_first(state, empty_db_url, env):
    code = _code_version()
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(PRODUCTS)
        if state == "partly migrated":
            migrate(conn, target=code - 1)
        elif state == "newer":
            migrate(conn)
            conn.execute(
                "INSERT INTO workerpool_migrations (version, name, checksum) VALUES (%s, 'future', 'x')", (code + 1,)
            )
    for command in DB_COMMANDS:
        line = _one_line_error(run_cli({**env, "DATABASE_URL": empty_db_url}, *command, timeout=60), 2)
        if state == "newer":
            assert f"version {code + 1}" in line and f"version {code}" in line, (command, line)
        else:
            assert "run `workerpool migrate`" in line, (command, line)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        versions = {m.version for m in migrations()}  # numbered with gaps where other branches took a number
        expected = {"unmigrated": set(), "partly migrated": versions - {code}, "newer": versions | {code + 1}}[state]
        assert set(applied_versions(conn)) == set(expected), "no command but migrate changes the schema"
    assert run_cli({**env, "DATABASE_URL": empty_db_url}, "migrate").returncode == (2 if state == "newer" else 0)


# ---- 5. expected failures: one line and a documented code ------------------------------------


def test_algolia_refusing_or_unreachable_is_exit_4_in_one_line(products, env, emulator, tmp_path):
    db = products
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 5) g")
    drain(env)
    settings_file = tmp_path / "settings.json"
    settings_file.write_text('{"products": {"searchableAttributes": ["name"]}}')
    wrong_key = {"ALGOLIA_ADMIN_KEY": "not-the-key-0000"}
    closed = {"ALGOLIA_HOSTS": f"http://127.0.0.1:{_closed_port()}"}
    for extra in (wrong_key, closed):
        for command in (
            ("verify", "products"),
            ("settings", "push", "--file", str(settings_file)),
            ("reindex", "products", "--atomic"),
        ):
            line = _one_line_error(run_cli({**env, **extra}, *command), 4)
            assert ("403" in line or "credentials" in line) if extra is wrong_key else "unreachable" in line, line
            assert "not-the-key-0000" not in line


def test_bad_numbers_are_refused_in_one_line(env):
    line = _one_line_error(run_cli(env, "emulator", "--port", "99999"), 2)
    assert "99999" in line and "65535" in line, line
    for days in ("99999999999", "-5", "soon"):
        line = _one_line_error(run_cli(env, "cleanup", "--days", days), 2)
        assert days in line, line
    _one_line_error(run_cli(env, "reindex", "products", "--chunk-size", "0"), 2)
    _one_line_error(run_cli(env, "nonsense"), 2)


# ---- 6. the emulator's boundaries and control characters -------------------------------------


def test_emulator_binds_beyond_loopback_only_when_told_and_given_its_own_key(env, tmp_path):
    bare = {k: v for k, v in env.items() if not k.startswith("ALGOLIA_")}
    for args in (
        ("--host", "0.0.0.0"),
        ("--host", "0.0.0.0", "--allow-remote"),
        ("--host", "0.0.0.0", "--allow-remote", "--api-key", "emulator-admin-key"),
    ):
        line = _one_line_error(run_cli(bare, "emulator", "--port", "0", *args, timeout=30), 2)
        assert "0.0.0.0" in line and ("--allow-remote" in line or "--api-key" in line), line
    refused = subprocess.run(
        [sys.executable, "-m", "workerpool.emulator", "--host", "0.0.0.0"],
        env=bare,
        capture_output=True,
        text=True,
        timeout=30,
    )
    _one_line_error(refused, 2)

    log = tmp_path / "emulator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            workerpool_cmd(
                "emulator", "--port", "0", "--host", "0.0.0.0", "--allow-remote", "--api-key", "a-key-of-our-own-1234"
            ),
            env=bare,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "emulator listening" in log.read_text(), message="the emulator to listen")
        assert "a-key-of-our-own-1234" not in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def test_index_names_with_control_characters_are_refused_and_never_printed_raw(products, env):
    db = products
    for bad in ("evil\x1b[2Jname", "bell\x07", "nul\x00x", "csi\x9bx", "del\x7f"):
        if "\x00" in bad:
            continue  # an argv cannot carry NUL; the pattern refuses it all the same
        line = _one_line_error(run_cli(env, "watch", "products", "--index", bad), 2)
        assert not _CONTROL.search(line), repr(line)
    from workerpool.capture.triggers import _INDEX_NAME

    assert not _INDEX_NAME.match("nul\x00x")

    # A registration written before names were checked (or by hand) is shown escaped.
    db.execute("UPDATE algolia_index_config SET index_name = %s", ("evil\x1b[2J\x07\x9bname",))
    text = run_cli(env, "stats")
    assert text.returncode == 0 and not _CONTROL.search(text.stdout) and "evil\\x1b[2J\\x07\\x9bname" in text.stdout, (
        repr(text.stdout)
    )
    js = run_cli(env, "stats", "--json")
    assert js.returncode == 0 and not _CONTROL.search(js.stdout), repr(js.stdout)
    assert orjson.loads(js.stdout)["tables"][0]["index_name"] == "evil\x1b[2J\x07\x9bname"


# ---- 7. a crash loop is a crash loop ---------------------------------------------------------


def _worker_pid_after_batch(pool, db: psycopg.Connection, key: int) -> int:
    """Write a row, wait until some worker settles it, and return that worker's pid."""
    before = len(pool.lines("batch_synced"))
    db.execute("INSERT INTO products (id, name) VALUES (%s, 'k')", (key,))
    wait_until(
        lambda: len(pool.lines("batch_synced")) > before and not queue_counts(db),
        timeout=60,
        message="a batch to be settled",
    )
    return pool.lines("batch_synced")[-1]["pid"]


def test_workers_killed_in_service_are_restarted_however_often(products, env, start_pool):
    db = products
    pool = start_pool(extra_env={"RESTART_LIMIT": "3", "RESTART_WINDOW": "600000"})
    for n in range(1, 6):  # past the limit, well inside the window
        pid = _worker_pid_after_batch(pool, db, n)
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda n=n: len(pool.lines("worker_started")) > n or pool.proc.poll() is not None,
            timeout=90,
            message="the worker's restart",
        )
        assert pool.proc.poll() is None, pool.output[-3000:]
    _worker_pid_after_batch(pool, db, 100)  # still syncing
    assert pool.stop() == 0
    assert not pool.lines("gave_up")
    assert len(pool.lines("worker_died")) == 5
    delays = [e["delay_s"] for e in pool.lines("worker_restart_scheduled")]
    assert len(delays) == 5 and all(d > 0 for d in delays), delays


def test_workers_dying_before_their_first_batch_still_make_it_give_up(products, env, start_pool):
    pool = start_pool(extra_env={"RESTART_LIMIT": "3", "RESTART_WINDOW": "600000"})
    for n in range(1, 4):
        wait_until(
            lambda n=n: len(pool.lines("worker_started")) >= n or pool.proc.poll() is not None,
            timeout=90,
            message="a worker to start",
        )
        if pool.proc.poll() is not None:
            break
        os.kill(pool.lines("worker_started")[-1]["pid"], signal.SIGKILL)
    assert pool.proc.wait(timeout=90) == 3, pool.output[-3000:]
    gave_up = pool.lines("gave_up")
    assert len(gave_up) == 1 and gave_up[0]["reason"] == "crash_loop", gave_up
