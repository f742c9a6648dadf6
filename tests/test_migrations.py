"""Migrations: an install upgraded one version at a time equals a fresh install of the latest."""

from __future__ import annotations

import shutil
import subprocess

import psycopg
import pytest

from workerpool.migrate import migrate, migrations


def _schema(dsn: str) -> str:
    dump = subprocess.run(["pg_dump", "--schema-only", "--no-owner", "--no-privileges", "-d", dsn],
                          capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in dump.splitlines()
                     if not line.startswith(("--", "\\restrict", "\\unrestrict")) and "pg_dump" not in line)



@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed (postgresql-client)")
def test_step_by_step_upgrade_equals_fresh_install(empty_db_url, pg_server):
    versions = [m.version for m in migrations()]
    assert versions == sorted(versions) and len(versions) >= 2
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for version in versions:  # one `migrate` per release, as an upgraded install saw them
            assert [m.version for m in migrate(conn, target=version)] == [version]
        assert migrate(conn) == []
        upgraded = _schema(empty_db_url)
        fresh_name = conn.info.dbname + "_fresh"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{fresh_name}"')
    fresh_url = psycopg.conninfo.make_conninfo(empty_db_url, dbname=fresh_name)
    try:
        with psycopg.connect(fresh_url, autocommit=True) as conn:
            assert len(migrate(conn)) == len(versions)
        assert _schema(fresh_url) == upgraded
    finally:
        with psycopg.connect(pg_server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{fresh_name}" WITH (FORCE)')
