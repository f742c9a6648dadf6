"""Issue 29's edges, each as a user meets it: one line and a documented exit code instead of a
traceback, secrets that stay hidden however they are misspelled, and answers that are not Algolia's.

Real Postgres, the emulator over real HTTP, real `workerpool` processes: no mocks.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time

import pytest

from testing import drain, run_cli, wait_until
from workerpool.observability.serving import IDLE_TIMEOUT_S


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_error(result: subprocess.CompletedProcess, code: int) -> str:
    """The command exited `code` with exactly one line on stderr and no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {output[-2000:]}"
    assert "Traceback" not in output, output[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {result.stderr[-2000:]}"
    return lines[0]


# ---- redaction -----------------------------------------------------------------------------------


def test_a_misspelled_or_unencoded_password_is_never_printed(env):
    port = _closed_port()
    for dsn, secret in (
        (f"host=127.0.0.1 port={port} passwrd=S3cr3tPw", "S3cr3tPw"),
        (f"postgresql://postgres:S3c@r3tPw@127.0.0.1:{port}/x", "r3tPw"),
    ):
        line = one_line_error(run_cli({**env, "DATABASE_URL": dsn}, "stats"), 2)
        assert secret not in line and "***" in line, line


def test_a_short_password_is_not_starred_inside_other_words(env):
    line = one_line_error(
        run_cli({**env, "DATABASE_URL": f"postgresql://postgres:os@127.0.0.1:{_closed_port()}/x"}, "stats"), 2
    )
    assert "h***t" not in line and ":***@" in line, line


def test_a_refused_dashboard_token_is_not_revealed_by_starring_it(env):
    line = one_line_error(run_cli({**env, "DASHBOARD_TOKEN": "short"}, "stats"), 2)
    assert "is too short (5 characters)" in line and "***" not in line, line


# ---- one line instead of a traceback or a page ---------------------------------------------------


def test_a_dotenv_file_that_is_not_utf8_is_one_line(env, tmp_path):
    (tmp_path / ".env").write_bytes(b"LOG_LEVEL=\xff\xfe\n")
    line = one_line_error(run_cli(env, "stats", cwd=str(tmp_path)), 2)
    assert ".env is not UTF-8" in line, line


def test_unwatch_of_a_name_postgres_cannot_parse_says_it_is_not_watched(products, env):
    line = one_line_error(run_cli(env, "unwatch", '"x'), 2)
    assert "is not watched" in line and "transaction is aborted" not in line, line


def test_an_error_inside_generated_code_is_one_short_line_not_the_generated_sql(db, env):
    db.execute('CREATE TABLE "t$body$z" (id int PRIMARY KEY, v text)')
    db.execute(
        "CREATE FUNCTION no_functions() RETURNS event_trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'no new functions today'; END $$"
    )
    db.execute(
        "CREATE EVENT TRIGGER no_functions ON ddl_command_end WHEN TAG IN ('CREATE FUNCTION') "
        "EXECUTE FUNCTION no_functions()"
    )
    try:
        line = one_line_error(run_cli(env, "watch", '"t$body$z"', "--index", "z"), 2)
    finally:
        db.execute("DROP EVENT TRIGGER no_functions")
    assert "no new functions today" in line and "CREATE OR REPLACE FUNCTION" not in line, line
    assert len(line) < 400, len(line)


def test_settings_push_from_an_endless_file_or_a_directory_is_refused(products, env, tmp_path):
    line = one_line_error(run_cli(env, "settings", "push", "--dry-run", "--file", "/dev/zero", timeout=30), 2)
    assert "larger than" in line, line
    line = one_line_error(run_cli(env, "settings", "push", "--dry-run", "--file", str(tmp_path)), 2)
    assert "cannot be read" in line, line


# ---- answers that are not Algolia's --------------------------------------------------------------


@pytest.mark.parametrize("answer", ["<html>a proxy's page</html>", "{}"])
def test_a_2xx_answer_that_is_not_algolias_is_one_line_and_exit_4(products, env, emulator, tmp_path, answer):
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 6) g")
    drain(env)
    (tmp_path / "settings.json").write_text('{"products": {"customRanking": ["desc(stock)"]}}')
    for command in (
        ("verify", "products"),
        ("reindex", "products", "--atomic", "--restart"),
        ("settings", "push", "--file", str(tmp_path / "settings.json")),
    ):
        # {} is a valid getSettings answer: the request that must fail is the next one
        emulator.inject_fault(answer=answer, count=50)
        line = one_line_error(run_cli(env, *command), 4)
        emulator.clear_faults()
        assert "that is not Algolia's" in line, line
    assert run_cli(env, "verify", "products").returncode == 0, "an empty object is not an empty index"


def test_commands_do_not_import_the_generated_client_and_its_models():
    """`reindex` of a 6-row table spent most of its CPU importing algoliasearch's client module."""
    code = (
        "import sys, workerpool.cli, workerpool.ops.reindex, workerpool.ops.verify, workerpool.ops.index_settings;"
        "print(sorted(m for m in sys.modules if m.startswith('algoliasearch.search.client')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


# ---- the health server: DNS rebinding, idle connections -------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(port: int, path: str, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.fixture
def health_port(products, start_pool):
    port = _free_port()
    pool = start_pool("--workers", "1", extra_env={"HEALTH_PORT": str(port)})
    wait_until(lambda: '"health_started"' in pool.output, timeout=20, message="the health server")
    return port


def test_the_dashboard_refuses_a_host_header_a_rebound_dns_name_would_send(health_port):
    assert _get(health_port, "/api/overview", "attacker.example")[0] == 421
    assert _get(health_port, "/api/overview", f"attacker.example:{health_port}")[0] == 421
    for host in (f"127.0.0.1:{health_port}", f"localhost:{health_port}", "127.0.0.1", f"{socket.gethostname()}"):
        status, body = _get(health_port, "/api/overview", host)
        assert status == 200, (host, status, body[:200])
    # probes and scrapes name the host as they like
    assert _get(health_port, "/metrics", "prometheus-target.example")[0] == 200


def test_the_health_server_closes_a_connection_that_sends_nothing(health_port):
    with socket.create_connection(("127.0.0.1", health_port)) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\n")  # half a request, then silence
        idle.settimeout(IDLE_TIMEOUT_S + 10)
        started = time.monotonic()
        try:
            closed = idle.recv(1024) == b""
        except TimeoutError:
            closed = False
        assert closed, "the server kept a silent connection (and its thread) open"
        assert time.monotonic() - started < IDLE_TIMEOUT_S + 5


# ---- values ------------------------------------------------------------------------------------------


def test_a_json_number_beyond_double_range_arrives_with_every_digit_as_jsonb_does(db, env, emulator):
    db.execute("CREATE TABLE docs (id int PRIMARY KEY, j json, jb jsonb)")
    assert run_cli(env, "watch", "docs", "--index", "docs").returncode == 0
    db.execute("""INSERT INTO docs VALUES (1, '{"v": 1e400, "w": 1.5e-400}', '{"v": 1e400, "w": 1.5e-400}')""")
    drain(env)
    record = emulator.records("docs")["1"]
    assert record["j"]["v"] == record["jb"]["v"] == "1" + "0" * 400
    assert record["j"]["w"] == record["jb"]["w"] == "0." + "0" * 399 + "15"


# ---- the Python API ------------------------------------------------------------------------------------


def test_the_python_api_refuses_a_schema_newer_than_its_code_as_the_cli_does(products, db_url, env):
    from workerpool import ConfigError, DatabaseService, Settings
    from workerpool.db.version import code_version

    products.execute("INSERT INTO products (name) VALUES ('a')")
    newer = code_version() + 1
    products.execute("INSERT INTO workerpool_migrations (version, name, checksum) VALUES (%s, 'future', 'x')", (newer,))
    assert f"at version {newer}, newer than" in one_line_error(run_cli(env, "stats"), 2)
    settings = Settings.from_env(env)
    with DatabaseService(db_url, settings) as db, pytest.raises(ConfigError, match=f"at version {newer}, newer than"):
        db.claim(10)
    assert products.execute("SELECT count(*) FROM algolia_sync_queue WHERE status = 'processing'").fetchone()[0] == 0


# ---- isolation -----------------------------------------------------------------------------------------


def test_a_source_view_row_whose_volatile_function_raises_fails_alone(db, env, emulator):
    db.execute("CREATE TABLE parts (id int PRIMARY KEY, qty int)")
    db.execute(
        "CREATE FUNCTION doubled(q int) RETURNS int LANGUAGE plpgsql VOLATILE AS "
        "$$ BEGIN IF q = 13 THEN RAISE EXCEPTION 'part 13 is broken'; END IF; RETURN q * 2; END $$"
    )
    db.execute("CREATE VIEW part_records AS SELECT id, doubled(qty) AS twice FROM parts")
    assert run_cli(env, "watch", "parts", "--index", "parts", "--source", "part_records").returncode == 0
    db.execute("INSERT INTO parts SELECT g, g FROM generate_series(1, 40) g")
    # generic plans (as a prepared statement gets after a few runs): the view scanned whole
    drain(env, "--batch-size", "7", extra_env={"PGOPTIONS": "-c plan_cache_mode=force_generic_plan"}, rows_fail=True)
    failed = db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall()
    assert [r[0] for r in failed] == ["13"], failed
    assert "part 13 is broken" in failed[0][1]
    assert len(emulator.records("parts")) == 39


def test_an_over_long_key_keeps_one_failed_row_that_retry_failed_leaves_alone(db, env, emulator):
    db.execute("CREATE TABLE notes (k text PRIMARY KEY, body text)")
    assert run_cli(env, "watch", "notes", "--index", "notes").returncode == 0
    long_key = "x" * 1500
    db.execute("INSERT INTO notes VALUES (%s, 'a'), ('short', 'b')", (long_key,))
    drain(env, rows_fail=True)
    for n in range(3):  # a hot key: each change spills again
        db.execute("UPDATE notes SET body = %s WHERE k = %s", (f"v{n}", long_key))
        drain(env, rows_fail=False)
    failed = db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall()
    assert len(failed) == 1 and failed[0][0].endswith("…") and "over the 1000-byte limit" in failed[0][1], failed
    writes_before = emulator.stats()["record_writes_total"]
    result = run_cli(env, "retry-failed")
    assert result.returncode == 0 and "returned 0 failed row(s)" in result.stdout and "kept 1" in result.stdout
    drain(env)
    assert emulator.stats()["record_writes_total"] == writes_before, "no delete for a truncated objectID"
    assert (
        db.execute("SELECT record_id, last_error FROM algolia_sync_queue WHERE status = 'failed'").fetchall() == failed
    )
    assert set(emulator.records("notes")) == {"short"}
