"""The schema version this code was written for, and the one check of it: every `workerpool` command
but `migrate`, `emulator` and `demo` runs it before it starts, and the Python API's `DatabaseService`
before its first claim.

A newer schema means a newer release migrated the database: its functions may take other arguments
or mean other things, and an older loop must not claim or settle rows there. An older one misses
functions this code calls.
"""

from __future__ import annotations

import re
from importlib import resources

import psycopg

from workerpool.config import ConfigError
from workerpool.db.connection import one_row
from workerpool.db.queries import Q

_FILE = re.compile(r"^(\d{3,})_[A-Za-z0-9_]+\.sql$")


class SchemaMismatch(ConfigError):
    """The database's workerpool schema is missing, older or newer than this code's; the message says
    which and what to run. A ConfigError, so `except workerpool.ConfigError` catches it."""


def code_versions() -> list[int]:
    """The versions of this code's migration files, in order."""
    folder = resources.files("workerpool.db") / "sql" / "migrations"
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _FILE.match(p.name)))


def code_version() -> int:
    """The schema version this code expects: the number of its newest migration file."""
    return code_versions()[-1]


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """The database's applied migrations and their checksums (none without the migrations table)."""
    if not one_row(conn.execute(Q.migrations_table_exists))[0]:
        return {}
    return dict(conn.execute(Q.applied_migrations).fetchall())


def newer_message(database: int, code: int) -> str:
    return (
        f"the workerpool schema in DATABASE_URL is at version {database}, newer than this workerpool's "
        f"version {code}; upgrade workerpool on this host (an older release must not run against it)"
    )


def check_schema(conn: psycopg.Connection) -> None:
    """Raise SchemaMismatch unless every migration of this code, and no newer one, is applied."""
    applied = applied_versions(conn)
    versions = code_versions()
    newest = versions[-1]
    if not applied:
        raise SchemaMismatch("the workerpool schema is missing in DATABASE_URL; run `workerpool migrate`")
    newer = sorted(v for v in applied if v > newest)
    if newer:
        raise SchemaMismatch(newer_message(newer[-1], newest))
    missing = [v for v in versions if v not in applied]
    if missing:
        raise SchemaMismatch(
            f"the workerpool schema in DATABASE_URL is at version {max(applied)}, older than this workerpool's "
            f"version {newest} (missing migration(s) {', '.join(map(str, missing))}); run `workerpool migrate`"
        )
