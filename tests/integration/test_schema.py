"""schema.sql and the migrations agree: a database built from schema.sql has exactly the schema of one
built by applying every migration in order (the path an upgraded install took)."""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from pathlib import Path

import psycopg
import pytest

from workerpool.ops.migrate import migrate, migrations


def _major_version(pg_dump: Path) -> int | None:
    """The major version a pg_dump binary reports (`pg_dump (PostgreSQL) 16.2` is 16), or None."""
    try:
        out = subprocess.run([str(pg_dump), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    match = re.search(r"\)\s+(\d+)", out)
    return int(match.group(1)) if match else None


def _pg_dump_for(dsn: str) -> str:
    """A pg_dump of the server's own major version: pg_dump refuses a newer server, and a newer pg_dump
    writes a different dump. Looks in the embedded server's binaries (pgserver ships its own), in
    Debian's per-version directories, then on PATH; skips, naming what it found, if none matches."""
    with psycopg.connect(dsn) as conn:
        major = conn.info.server_version // 10000
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin/pg_dump")]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
            from pgserver._commands import POSTGRES_BIN_PATH
        candidates.insert(0, POSTGRES_BIN_PATH / "pg_dump")
    except ImportError:
        pass
    if shutil.which("pg_dump"):
        candidates.append(Path(shutil.which("pg_dump")))
    found = {str(c): _major_version(c) for c in candidates if c.exists()}
    for path, version in found.items():
        if version == major:
            return path
    pytest.skip(f"no pg_dump of PostgreSQL {major} (the server's major version) is installed; found {found}")


def _schema(pg_dump: str, dsn: str) -> str:
    dump = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "-d", dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [
        _sorted_options(line)
        for line in dump.splitlines()
        if not line.startswith(("--", "\\restrict", "\\unrestrict")) and "pg_dump" not in line
    ]
    return "\n".join(lines)


def _sorted_options(line: str) -> str:
    """A storage-parameter list in name order: `ALTER TABLE ... SET (...)` keeps the order the
    parameters were first set in, which is history, not schema."""
    match = re.fullmatch(r"(\s*WITH \()(.*)(\);?)", line)
    if not match:
        return line
    return match.group(1) + ", ".join(sorted(match.group(2).split(", "))) + match.group(3)


def _new_database(server: str, like: str, suffix: str) -> str:
    name = psycopg.conninfo.conninfo_to_dict(like)["dbname"] + suffix
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return psycopg.conninfo.make_conninfo(like, dbname=name)


def test_schema_sql_equals_the_migrations_applied_in_order(empty_db_url, pg_server):
    pg_dump = _pg_dump_for(pg_server)
    versions = [m.version for m in migrations()]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:  # a new install: schema.sql
        assert [m.version for m in migrate(conn)] == versions
        fresh = _schema(pg_dump, empty_db_url)
    upgraded_url = _new_database(pg_server, empty_db_url, "_upgraded")
    try:
        with psycopg.connect(upgraded_url, autocommit=True) as conn:
            for version in versions:  # one `migrate` per release, as an upgraded install saw them
                assert [m.version for m in migrate(conn, target=version)] == [version]
        upgraded = _schema(pg_dump, upgraded_url)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(
                f'DROP DATABASE IF EXISTS "{psycopg.conninfo.conninfo_to_dict(upgraded_url)["dbname"]}" WITH (FORCE)'
            )
    # Both are whole schemas, not two empty dumps that agree.
    for name in ("TABLE public.algolia_sync_queue", "FUNCTION public.algolia_sync_channel()", "EVENT TRIGGER"):
        assert name in fresh
    assert fresh.splitlines() == upgraded.splitlines()


def test_storage_parameters_compare_in_name_order():
    assert _sorted_options("WITH (b='1', a='2');") == "WITH (a='2', b='1');"
    assert _sorted_options("    b integer,") == "    b integer,"


def _numbered(query: str) -> bytes:
    """psycopg's placeholders as the server's own ($1, $2, ...; a named one keeps its number)."""
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        key = match.group(1) or f"#{len(numbers)}"
        return "$" + str(numbers.setdefault(key, len(numbers) + 1))

    return re.sub(r"%%|%\((\w+)\)s|%s", number, query).encode()


# Statements whose parameter types only the values psycopg sends settle (an untyped PREPARE cannot).
_TYPED_BY_THE_CALLER = {
    "register": "%(oid)s is compared with an oid and stored as a regclass",
    "keys_to_reenqueue": "%(t0)s - make_interval(...) needs t0 to be a timestamptz",
}


def test_every_named_query_is_valid_against_schema_sql(db):
    """Each statement of queries.sql, and of the demo's ops/demo.sql, that Postgres can prepare is
    prepared against the installed schema (and the demo's catalog): a misspelt table, column or function
    fails here, not in production. Templates ({...}) and utility statements (SET, LISTEN, DDL) cannot be
    prepared and are left out."""
    from workerpool.db.queries import NOTIFY_CHANNEL, parse
    from workerpool.ops.demo import DEMO_SQL

    assert db.execute("SELECT algolia_sync_channel()").fetchone()[0] == NOTIFY_CHANNEL
    db.execute(DEMO_SQL.catalog)
    root = Path(__file__).parents[2]
    statements = parse((root / "sql/queries.sql").read_text())
    demo = parse((root / "workerpool/ops/demo.sql").read_text(), "demo.sql")
    statements.update((f"demo.{name}", query) for name, query in demo.items())
    prepared, problems = [], []
    for name, query in statements.items():
        if "{" in query or not re.match(r"(SELECT|INSERT|UPDATE|DELETE|WITH)\b", query):
            continue
        if name in _TYPED_BY_THE_CALLER:
            continue
        result = db.pgconn.prepare(b"", _numbered(query))
        if result.status != psycopg.pq.ExecStatus.COMMAND_OK:
            problems.append(f"{name}: {result.error_message.decode().strip()}")
        prepared.append(name)
    assert not problems, "\n".join(problems)
    assert len(prepared) > 60 and "claim_batch" in prepared and "load_watched" in prepared
    assert "demo.count_records" in prepared and "demo.reprice" in prepared


def test_the_capture_function_name_is_the_one_sql_generates(db):
    """`watch` names a table's capture function through algolia_sync_capture_name, the same function
    the migrations that regenerate captures use."""
    from workerpool.capture.triggers import watch

    db.execute("CREATE TABLE items (id integer PRIMARY KEY, name text)")
    watch(db, "items", "items")
    expected = db.execute("SELECT algolia_sync_capture_name('items')").fetchone()[0]
    attached = db.execute(
        "SELECT DISTINCT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = 'items'::regclass AND t.tgname LIKE 'algolia_sync_%'"
    ).fetchall()
    assert attached == [(expected,)]
