"""Migrations: an install upgraded one version at a time equals a fresh install of the latest."""

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
        [pg_dump, "--schema-only", "--no-owner", "--no-privileges", "-d", dsn],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(
        line
        for line in dump.splitlines()
        if not line.startswith(("--", "\\restrict", "\\unrestrict")) and "pg_dump" not in line
    )


def test_step_by_step_upgrade_equals_fresh_install(empty_db_url, pg_server):
    pg_dump = _pg_dump_for(pg_server)
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and len(versions) >= 2
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for version in versions:  # one `migrate` per release, as an upgraded install saw them
            assert [m.version for m in migrate(conn, target=version)] == [version]
        assert migrate(conn) == []
        upgraded = _schema(pg_dump, empty_db_url)
        fresh_name = conn.info.dbname + "_fresh"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{fresh_name}"')
    fresh_url = psycopg.conninfo.make_conninfo(empty_db_url, dbname=fresh_name)
    try:
        with psycopg.connect(fresh_url, autocommit=True) as conn:
            assert len(migrate(conn)) == len(versions)
        assert _schema(pg_dump, fresh_url) == upgraded
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{fresh_name}" WITH (FORCE)')
