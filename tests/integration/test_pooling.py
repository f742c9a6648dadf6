"""`db/pooling.py` on a real server: what each mode sets on a connection, and the pinned transaction
that every read of rows and keys runs in."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from workerpool.config import ConfigError
from workerpool.db import pooling
from workerpool.db.connection import connect


@pytest.fixture
def mode() -> Iterator[None]:
    """Each test sets the process's mode; it is `auto` again afterwards."""
    yield
    pooling.use("auto")


def _show(conn: psycopg.Connection, name: str) -> str:
    row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


def test_auto_finds_no_proxy_on_a_direct_connection(db_url, mode):
    pooling.use("auto")
    with connect(db_url) as conn:
        assert pooling.mode() == "direct"
        assert pooling.prepared(conn)
        # The session carries every pinned setting where it is the connection's own.
        assert (_show(conn, "TimeZone"), _show(conn, "IntervalStyle"), _show(conn, "lc_monetary")) == (
            "UTC",
            "postgres",
            "C",
        )


def test_transaction_pooling_prepares_nothing_and_sets_only_tracked_settings(db_url, mode):
    pooling.use("transaction")
    hostile = psycopg.conninfo.make_conninfo(db_url, options="-c IntervalStyle=sql_standard -c extra_float_digits=0")
    with connect(hostile) as conn:
        assert not pooling.prepared(conn) and conn.prepare_threshold is None
        assert (_show(conn, "DateStyle"), _show(conn, "TimeZone")) == ("ISO, YMD", "UTC")
        assert _show(conn, "IntervalStyle") == "sql_standard"  # a session setting would reach other clients
        with pooling.pinned(conn):
            row = conn.execute("SELECT '1 day 02:03:04'::interval::text, 0.1::float8::text").fetchone()
        assert row == ("1 day 02:03:04", "0.1")
        assert _show(conn, "IntervalStyle") == "sql_standard"  # SET LOCAL ended with the transaction
        for _ in range(10):  # past psycopg's automatic preparation threshold
            conn.execute("SELECT %s::int", (1,))
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)


def test_pinned_joins_a_transaction_and_rolls_its_own_back(db_url, mode):
    pooling.use("direct")
    with connect(db_url) as conn:
        conn.execute("SET TimeZone = 'Asia/Tokyo'")
        with conn.transaction():
            with pooling.pinned(conn):
                assert _show(conn, "TimeZone") == "UTC"
            assert _show(conn, "TimeZone") == "UTC"  # for the rest of the caller's transaction
        assert _show(conn, "TimeZone") == "Asia/Tokyo"
        with pytest.raises(psycopg.errors.DivisionByZero), pooling.pinned(conn):
            conn.execute("SELECT 1 / 0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert _show(conn, "TimeZone") == "Asia/Tokyo"


def test_a_bad_mode_is_one_line_naming_it(mode):
    with pytest.raises(ConfigError, match="DATABASE_POOL_MODE='statement' is not valid; expected one of auto"):
        pooling.use("statement")
