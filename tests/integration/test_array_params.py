"""The array parameters the worker builds itself instead of handing psycopg lists: Postgres reads back
exactly the values given, whatever their shape (the binary bytea[] of hashes and shapes: empty, one
width, mixed widths, NULLs, empty values)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workerpool.runtime.queue import bytea_array, send_packed, text_array


@pytest.fixture(scope="module")
def conn(pg_server: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_server, autocommit=True) as c:
        yield c


def _read_back(conn: psycopg.Connection, values: list[bytes | None]) -> list[bytes | None]:
    with send_packed(conn.cursor()) as cur:
        cur.execute("SELECT %s::bytea[]", (bytea_array(values),))
        row = cur.fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    "values",
    [[], [b""], [b"\x00" * 16], [bytes(range(16)), bytes(range(16, 32))], [b"ab", None, b""], [None], [b"x" * 70_000]],
)
def test_bytea_array_reads_back_as_given(conn, values):
    assert _read_back(conn, values) == values


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40), st.binary(min_size=16, max_size=16)), max_size=50))
def test_any_list_of_bytes_and_nulls_reads_back_as_given(conn, values):
    assert _read_back(conn, values) == values


def test_the_connection_does_not_learn_the_packed_parameter(conn):
    """The dumper is the cursor's: the caller's connection keeps its own adapters."""
    with pytest.raises(psycopg.ProgrammingError):
        conn.execute("SELECT %s::bytea[]", (bytea_array([b"a"]),))
    assert conn.execute("SELECT %s::text[]", (text_array(["a"]),)).fetchone()[0] == ["a"]
