"""Migrations: a new install gets schema.sql with every version recorded; an existing one gets the
deltas it lacks, one release at a time. (tests/integration/test_schema.py checks that both paths end
in the same schema.)"""

from __future__ import annotations

import psycopg
import pytest

from workerpool.db.version import check_schema
from workerpool.ops.migrate import migrate, migrations


def test_a_new_install_records_every_migration_and_then_has_nothing_to_do(empty_db_url):
    every = migrations()
    versions = [m.version for m in every]
    assert versions == sorted(versions) and len(versions) >= 2
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert migrate(conn) == every
        recorded = conn.execute("SELECT version, name, checksum FROM workerpool_migrations ORDER BY version").fetchall()
        assert recorded == [(m.version, m.name, m.checksum) for m in every]
        check_schema(conn)
        assert migrate(conn) == []


def test_an_install_upgrades_one_release_at_a_time(empty_db_url):
    versions = [m.version for m in migrations()]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        for version in versions:  # one `migrate` per release, as an upgraded install saw them
            assert [m.version for m in migrate(conn, target=version)] == [version]
        assert migrate(conn) == []
        check_schema(conn)


def test_the_queue_has_no_completed_status_after_an_upgrade(empty_db_url):
    """Version 7 removes the 'completed' status no code writes: rows left with it by older code are
    deleted, and the status is refused from then on."""
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        migrate(conn, target=6)
        conn.execute(
            "INSERT INTO algolia_sync_queue (table_name, record_id, operation, status) VALUES "
            "('t', '1', 'UPDATE', 'completed'), ('t', '2', 'UPDATE', 'pending')"
        )
        assert [m.version for m in migrate(conn)] == [m.version for m in migrations() if m.version >= 7]
        assert conn.execute("SELECT record_id, status FROM algolia_sync_queue").fetchall() == [("2", "pending")]
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO algolia_sync_queue (table_name, record_id, operation, status) "
                "VALUES ('t', '3', 'UPDATE', 'completed')"
            )
