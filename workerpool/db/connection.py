"""Connections: one place that opens them, so timeouts, names and error wording stay consistent."""

from __future__ import annotations

from typing import TypeVar

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool

from workerpool.config import ConfigError
from workerpool.db import pgtypes, pooling
from workerpool.redaction import dsn_passwords, environment_secrets, redact_dsn, scrub

APPLICATION_NAME = "workerpool"

_Row = TypeVar("_Row")


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused us. The message is safe to print."""


# A host cut off from Postgres by a network partition gets no error at all: a statement waits for a
# reply that was dropped, and Linux gives up on unacknowledged data only after ~15 minutes (and
# never on an idle connection without keepalives). These libpq settings make a dead network an
# error within ~30 s, so the worker logs it, backs off and reconnects when the network is back;
# its lease has expired meanwhile and other hosts have taken its rows. A DATABASE_URL that sets any
# of them keeps its own value. libpq ignores them on Unix sockets.
TCP_LIVENESS = {
    "keepalives": "1",
    "keepalives_idle": "10",  # s of silence before probing
    "keepalives_interval": "5",  # s between probes
    "keepalives_count": "3",  # unanswered probes before the connection is dead
    "tcp_user_timeout": "30000",  # ms that sent data may stay unacknowledged
}


def tcp_liveness(dsn: str) -> dict[str, str]:
    """TCP_LIVENESS minus whatever the DSN already sets."""
    own = psycopg.conninfo.conninfo_to_dict(dsn)
    return {k: v for k, v in TCP_LIVENESS.items() if k not in own}


def with_tcp_liveness(dsn: str) -> str:
    """The DSN with `tcp_liveness(dsn)` added, as the one conninfo string psycopg.connect would build."""
    return psycopg.conninfo.make_conninfo(dsn, **tcp_liveness(dsn))


def one_row(cursor: psycopg.Cursor[_Row]) -> _Row:
    """The row of a statement that always returns one (an aggregate, a function call).

    No row means the statement is not the one the caller wrote: a psycopg.ProgrammingError, which
    callers that handle database errors already catch, rather than a None at every call site.
    """
    row = cursor.fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the statement returned no row where it always returns one")
    return row


def connect(dsn: str, *, autocommit: bool = True, purpose: str = "cli", timeout: int = 10) -> psycopg.Connection:
    """A single connection; errors become one line that names the (redacted) DSN."""
    try:
        conn = psycopg.connect(
            with_tcp_liveness(dsn),
            autocommit=autocommit,
            connect_timeout=timeout,
            application_name=f"{APPLICATION_NAME}:{purpose}",
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(describe_error(dsn, exc)) from None
    try:
        configure(conn)
    except (psycopg.Error, pooling.PinnedSettingsRefused) as exc:
        conn.close()
        raise DatabaseUnavailable(describe_error(dsn, exc)) from None
    return conn


def configure(conn: psycopg.Connection) -> None:
    """A new connection made ready: session settings for the pool mode (`pooling`), value loaders.

    No setting travels in the libpq `options` startup parameter: PgBouncer refuses it."""
    pooling.setup_session(conn)
    pgtypes.configure(conn)


def _configure_worker(conn: psycopg.Connection) -> None:
    pooling.setup_session(conn, worker=True)
    pgtypes.configure(conn)


def describe_error(dsn: str, exc: BaseException) -> str:
    """One line about a connection failure, without the password (libpq may quote the DSN back)."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    detail = scrub(detail, dsn_passwords(dsn) + environment_secrets())
    return f"cannot connect to DATABASE_URL={redact_dsn(dsn)!r}: {detail}"


class PinnedPool(ConnectionPool):
    """A pool made by `make_pool`: its connections have the pinned session settings and loaders, so
    rows can be read on them as the workers read them."""


def make_pool(dsn: str, size: int, name: str) -> PinnedPool:
    """A worker's own pool. Created after fork, never inherited: a connection shared by two processes
    interleaves their protocol messages."""
    return PinnedPool(
        dsn,
        min_size=1,
        max_size=max(1, size),
        kwargs={
            "autocommit": True,
            "application_name": f"{APPLICATION_NAME}:{name}",
            "connect_timeout": 10,
            **tcp_liveness(dsn),
        },
        configure=_configure_worker,
        name=name,
        timeout=30,
        reconnect_timeout=0,
        # A killed backend is detected when the connection comes back from use, not on every checkout.
        check=None,
        open=True,
    )


def require(dsn: str) -> None:
    """Fail start-up with a clear line if DATABASE_URL is unset or unreachable."""
    if not dsn:
        raise ConfigError("DATABASE_URL is not set; expected postgresql://user@host:port/dbname")
    connect(dsn, purpose="check", timeout=5).close()
