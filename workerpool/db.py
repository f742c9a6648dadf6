"""Connections: one place that opens them, so timeouts, names and error wording stay consistent."""

from __future__ import annotations

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool

from .config import ConfigError, redact_dsn

APPLICATION_NAME = "workerpool"


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused us. The message is safe to print."""


def connect(dsn: str, *, autocommit: bool = True, purpose: str = "cli", timeout: int = 10) -> psycopg.Connection:
    """A single connection; errors become one line that names the (redacted) DSN."""
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=timeout,
            application_name=f"{APPLICATION_NAME}:{purpose}",
        )
    except psycopg.Error as exc:
        raise DatabaseUnavailable(describe_error(dsn, exc)) from None


def describe_error(dsn: str, exc: BaseException) -> str:
    """One line about a connection failure, without the password."""
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot connect to DATABASE_URL={redact_dsn(dsn)!r}: {detail}"


def make_pool(dsn: str, size: int, name: str) -> ConnectionPool:
    """A worker's own pool. Created after fork, never inherited (DESIGN.md's known traps)."""
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=max(1, size),
        # synchronous_commit=off: a commit does not wait for its WAL flush. If Postgres crashes, the
        # last fraction of a second of claims and acks can be lost, which only returns rows to an
        # earlier state (pending, or claimed until the lease expires): they are sent again, never
        # lost. Writers' own transactions (the triggers) keep the server's setting.
        kwargs={"autocommit": True, "application_name": f"{APPLICATION_NAME}:{name}", "connect_timeout": 10,
                "options": _with_option(dsn, "-c synchronous_commit=off")},
        name=name,
        timeout=30,
        reconnect_timeout=0,
        # A killed backend is detected when the connection comes back from use, not on every checkout.
        check=None,
        open=True,
    )


def _with_option(dsn: str, option: str) -> str:
    """The DSN's own `options` (a search_path, say) plus one more: a keyword would replace them."""
    existing = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
    return f"{existing} {option}".strip()


def require(dsn: str) -> None:
    """Fail start-up with a clear line if DATABASE_URL is unset or unreachable."""
    if not dsn:
        raise ConfigError("DATABASE_URL is not set; expected postgresql://user@host:port/dbname")
    connect(dsn, purpose="check", timeout=5).close()
