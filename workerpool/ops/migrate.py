"""Schema install and versioned migrations, recorded in a table.

`sql/schema.sql` is the whole current schema; `sql/migrations/` holds the released deltas, numbered
(the repository's top-level sql/, which the package ships as `workerpool/db/sql/`). A new install runs
schema.sql in one transaction and records every migration as applied; an existing install applies the
deltas it lacks, in order.

Safe to run from several hosts at once, directly or through any pooler: one run is one transaction
that first takes a transaction-scoped advisory lock, so runs wait for each other, see what the one
before them committed, and a crash or an error leaves the schema as it was before the run.

The code's schema version is the highest migration file it ships; every command but `migrate`,
`emulator` and `demo` checks the database against it first (`db.version.check_schema`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from workerpool.capture.triggers import refresh_captures
from workerpool.db.privileges import check_schema_trust, install_schema, pin_search_path
from workerpool.db.queries import Q
from workerpool.db.version import SchemaMismatch, applied_versions, code_version, newer_message

log = logging.getLogger(__name__)

# Any 64-bit number unique to this purpose; chosen once, never change it.
MIGRATION_LOCK_ID = 0x776F726B6572_01
# The migration that created algolia_sync_pin_search_paths: every later one is followed by a call.
PINNED_PATHS_VERSION = 13
_FILE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def sql_dir() -> Path:
    """Where the SQL files are: `workerpool/db/sql/` inside the package (an installed wheel's copy of the
    repository's sql/; in a checkout, a symlink to it)."""
    return Path(str(resources.files("workerpool.db") / "sql"))


def schema_sql() -> str:
    """The whole current schema (schema.sql), as a new install runs it."""
    return (sql_dir() / "schema.sql").read_text()


def migrations_dir() -> Path:
    """Where the released deltas are: `sql/migrations/`."""
    return sql_dir() / "migrations"


def migrations(directory: Path | None = None) -> list[Migration]:
    """All migration files, in version order."""
    found = []
    for path in sorted((directory or migrations_dir()).iterdir()):
        match = _FILE.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions in {directory or migrations_dir()}: {versions}")
    return found


def _refresh_captures(conn: psycopg.Connection) -> None:
    """Watched tables get the capture code of the schema just installed (an upgrade may change it)."""
    for problem in refresh_captures(conn):
        log.warning("capture not refreshed: " + problem, extra={"action": "capture_refresh_failed"})


def _install(conn: psycopg.Connection) -> list[Migration]:
    """A new install: schema.sql and a version row for every migration, in one transaction."""
    every = migrations()
    with conn.transaction():
        conn.execute(schema_sql())
        for migration in every:
            conn.execute(
                Q.record_migration,
                (migration.version, migration.name, migration.checksum),
            )
    log.info("schema installed", extra={"action": "schema_installed", "version": every[-1].version})
    return every


def migrate(conn: psycopg.Connection, target: int | None = None) -> list[Migration]:
    """Apply every migration not yet applied (up to `target`); returns those applied now.

    A database with none applied gets schema.sql instead, with every migration recorded (and
    returned) as applied, unless `target` stops short of the newest: then the deltas up to it run.
    `conn` must be in autocommit mode: the run is one transaction (each file a savepoint in it).

    workerpool's schema is the one it is installed in, or for a new install the first schema of the
    connection's search_path; one in which an untrusted role may create objects is refused before
    anything is written (ConfigError). The SQL runs with that schema and pg_temp as its search_path.
    """
    schema = install_schema(conn)
    check_schema_trust(conn, schema)
    with conn.transaction():
        conn.execute(Q.migration_lock, (MIGRATION_LOCK_ID,))
        pin_search_path(conn, schema)
        applied_now = _apply(conn, target)
        if applied_now and target is None:
            _refresh_captures(conn)
    return applied_now


def _apply(conn: psycopg.Connection, target: int | None) -> list[Migration]:
    """schema.sql or the missing migrations, then every function's search_path pinned."""
    applied_now: list[Migration] = []
    conn.execute(Q.create_migrations_table)
    done = applied_versions(conn)
    if done and max(done) > code_version():
        raise SchemaMismatch(newer_message(max(done), code_version()))
    if not done and (target is None or target >= code_version()):
        applied_now = _install(conn)
    for migration in [] if applied_now else migrations():
        if target is not None and migration.version > target:
            break
        if migration.version in done:
            if done[migration.version] != migration.checksum:
                log.warning(
                    "migration changed after it was applied",
                    extra={"action": "migration_checksum_mismatch", "version": migration.version},
                )
            continue
        with conn.transaction():
            conn.execute(migration.sql)
            conn.execute(
                Q.record_migration,
                (migration.version, migration.name, migration.checksum),
            )
        applied_now.append(migration)
        log.info(
            "migration applied",
            extra={"action": "migration_applied", "version": migration.version, "migration": migration.name},
        )
    if applied_now and max(m.version for m in applied_now) >= PINNED_PATHS_VERSION:
        conn.execute(Q.pin_search_paths)
    return applied_now
