"""The schema version this code was written for, checked where code reaches the queue without the
command line: the Python API's `DatabaseService` checks it once before its first claim, as every
`workerpool` command does before it starts (`ops.migrate.check_schema`, with the same wording).

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


class SchemaVersionMismatch(ConfigError):
    """The database's workerpool schema is missing, older or newer than this code's; the message says
    which and what to run. A ConfigError, so `except workerpool.ConfigError` catches it."""


def code_version() -> int:
    """The schema version this code expects: the number of its newest migration file."""
    folder = resources.files("workerpool.db") / "sql" / "migrations"
    return max(int(m.group(1)) for p in folder.iterdir() if (m := _FILE.match(p.name)))


def check_version(conn: psycopg.Connection) -> bool:
    """True when the database's newest applied migration is this code's; SchemaVersionMismatch otherwise."""
    newest = code_version()
    applied = (
        [r[0] for r in conn.execute(Q.applied_migrations)]
        if one_row(conn.execute(Q.migrations_table_exists))[0]
        else []
    )
    if not applied:
        raise SchemaVersionMismatch("the workerpool schema is missing in the database; run `workerpool migrate`")
    if max(applied) > newest:
        raise SchemaVersionMismatch(
            f"the workerpool schema in the database is at version {max(applied)}, newer than this workerpool's "
            f"version {newest}; upgrade workerpool on this host (an older release must not run against it)"
        )
    if max(applied) < newest:
        raise SchemaVersionMismatch(
            f"the workerpool schema in the database is at version {max(applied)}, older than this workerpool's "
            f"version {newest}; run `workerpool migrate`"
        )
    return True
