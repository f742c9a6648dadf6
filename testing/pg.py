"""Which Postgres the tests run on, and databases on it.

DATABASE_URL when set, otherwise the local server on 127.0.0.1:5432, otherwise an embedded one
(pgserver); WORKERPOOL_TEST_EMBEDDED_PG=1 forces the embedded one whatever else answers, so that a
machine with a server can still prove the path of a machine without one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

EMBEDDED_SWITCH = "WORKERPOOL_TEST_EMBEDDED_PG"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def embedded_forced() -> bool:
    """Whether WORKERPOOL_TEST_EMBEDDED_PG asks for the embedded server ("1"; "0" or unset: no)."""
    value = os.environ.get(EMBEDDED_SWITCH, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(
            f"{EMBEDDED_SWITCH}={value!r} is not allowed: use 1 to force the embedded "
            f"Postgres, 0 or unset for DATABASE_URL, else 127.0.0.1:5432, else embedded"
        )
    return value == "1"


@contextlib.contextmanager
def embedded_server() -> Iterator[Any]:
    """A private embedded server (a pgserver.PostgresServer), its data in a new workerpool-pg-*
    directory of the system's temporary directory, stopped before that directory is removed.

    Not under pytest's tmp_path: run as root, pgserver runs Postgres as the user `pgserver`, which
    must traverse every parent directory, and each pytest session that starts on the machine resets
    pytest's temporary root to owner-only access."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs, via pgserver
        import pgserver

    with tempfile.TemporaryDirectory(prefix="workerpool-pg-") as data:
        server = pgserver.get_server(data, cleanup_mode="stop")
        try:
            yield server
        finally:
            # A postmaster that a test already stopped (by its data directory, after a restart) can
            # exit between pgserver's look at it and its terminate(): psutil.NoSuchProcess, a race
            # that the embedded CI pass hit, with the server down as wanted.
            import psutil

            with contextlib.suppress(psutil.NoSuchProcess):
                server.cleanup()


def _embedded_server_url() -> Iterator[str]:
    with embedded_server() as server:
        yield server.get_uri()


def server_urls() -> Iterator[str]:
    """Yields one URL whose user may create databases: embedded when forced, else DATABASE_URL, else
    the local server, else embedded. Close the generator to stop an embedded server."""
    if embedded_forced():
        yield from _embedded_server_url()
        return
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    try:
        psycopg.connect(LOCAL_URL, connect_timeout=3).close()
        yield LOCAL_URL
        return
    except psycopg.Error:
        pass
    yield from _embedded_server_url()


def server_kind(url: str) -> str:
    """How the run's summary names the server (never the DSN: it may hold a password)."""
    if url == LOCAL_URL:
        return "127.0.0.1:5432"
    if url == os.environ.get("DATABASE_URL"):
        return "DATABASE_URL"
    return "embedded, pgserver"


def with_dbname(url: str, dbname: str) -> str:
    """The same server and user, another database."""
    return psycopg.conninfo.make_conninfo(url, dbname=dbname)


def create_database(server_url: str, name: str, template: str | None = None) -> None:
    """CREATE DATABASE name, cloned from template when given."""
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(query)


def drop_database(server_url: str, name: str) -> None:
    """DROP DATABASE name, whoever is still connected to it."""
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
