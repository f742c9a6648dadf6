"""Every value a column can hold maps to JSON as README's "Records" table says, or fails its own record.

Hypothesis generates values for every supported column type; each is written by a real Postgres into
a table of that type, read back the way the workers read rows (their session settings and loaders),
and serialized by the worker's serializer. Nothing may raise, and the JSON must be what the README
promises for that type.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workerpool.db.connection import connect
from workerpool.runtime import records
from workerpool.runtime.shaping import fetch

SAFE = 2**53

# Postgres type -> (values to write, check of the JSON value read back against the value written)
Check = Callable[[Any, Any], bool]


def _number_or_text(written: Any, sent: Any) -> bool:
    """numeric and integers: a number when a float holds it exactly, else a string with every digit."""
    if isinstance(sent, str):
        return Decimal(sent) == Decimal(str(written)) or (sent == "NaN" and Decimal(str(written)).is_nan())
    if isinstance(sent, int):  # an integer number only within ±2^53, where JavaScript holds it exactly
        return Decimal(sent) == Decimal(str(written)) and abs(sent) < SAFE
    return Decimal(repr(sent)) == Decimal(str(written))  # a float only when it holds the value exactly


def _float(written: float, sent: Any) -> bool:
    if math.isnan(written) or math.isinf(written):
        return sent is None
    return sent == written


def _iso_or_postgres_text(written: Any, sent: Any) -> bool:
    return isinstance(sent, str) and sent != ""


def _json_exact(written: Any, sent: Any) -> bool:
    """jsonb: the same structure; integers past ±2^53 and numbers beyond double range as strings of
    their digits, other fractions as the nearest double."""
    if isinstance(written, dict):
        return (
            isinstance(sent, dict)
            and written.keys() == sent.keys()
            and all(_json_exact(written[k], sent[k]) for k in written)
        )
    if isinstance(written, list):
        return isinstance(sent, list) and len(written) == len(sent) and all(map(_json_exact, written, sent))
    if isinstance(written, bool) or written is None or isinstance(written, str):
        return written == sent
    if isinstance(sent, float) and not isinstance(written, int):
        return sent == float(written)  # a jsonb fraction arrives as the nearest double, or exact as text
    return _number_or_text(written, sent)


def _json_text(value: Any) -> str:
    """JSON text with Decimals written as numbers, digit for digit."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{orjson.dumps(k).decode()}:{_json_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(_json_text, value)) + "]"
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else orjson.dumps(value).decode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.text(max_size=20).filter(lambda s: "\x00" not in s)
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.decimals(
        allow_nan=False, allow_infinity=False, min_value=Decimal("-1e400"), max_value=Decimal("1e400"), places=None
    ).map(lambda d: d.normalize()),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda s: "\x00" not in s), inner, max_size=4)
    ),
    max_leaves=10,
)

TYPES: dict[str, tuple[st.SearchStrategy, Check]] = {
    "smallint": (st.integers(-(2**15), 2**15 - 1), lambda w, s: s == w),
    "integer": (st.integers(-(2**31), 2**31 - 1), lambda w, s: s == w),
    "bigint": (st.integers(-(2**63), 2**63 - 1), _number_or_text),
    "numeric": (
        st.decimals(
            allow_nan=False, allow_infinity=False, min_value=Decimal("-1e40"), max_value=Decimal("1e40"), places=None
        ),
        _number_or_text,
    ),
    "double precision": (st.floats(allow_nan=True, allow_infinity=True), _float),
    "real": (st.floats(width=32, allow_nan=False, allow_infinity=False), lambda w, s: s == pytest.approx(w, rel=1e-6)),
    "boolean": (st.booleans(), lambda w, s: s is w),
    "text": (st.text().filter(lambda s: "\x00" not in s), lambda w, s: s == w),
    "uuid": (st.uuids(), lambda w, s: s == str(w)),
    "bytea": (st.binary(max_size=64), lambda w, s: __import__("base64").b64decode(s) == w),
    "jsonb": (json_values, _json_exact),
    "date": (st.dates(), lambda w, s: s == w.isoformat()),
    "timestamp": (st.datetimes(), lambda w, s: dt.datetime.fromisoformat(s) == w),
    "timestamptz": (st.datetimes(timezones=st.just(dt.UTC)), lambda w, s: dt.datetime.fromisoformat(s) == w),
    "time": (st.times(), lambda w, s: dt.time.fromisoformat(s) == w),
    "interval": (
        st.timedeltas(min_value=dt.timedelta(days=-(10**6)), max_value=dt.timedelta(days=10**6)),
        lambda w, s: s == pytest.approx(w.total_seconds(), rel=1e-12, abs=1e-6),
    ),
    "inet": (st.ip_addresses(), lambda w, s: s == str(w)),
    "money": (
        st.integers(-(10**9), 10**9).map(str),  # written as text: there is no cast from integers
        lambda w, s: s == f"{'-' if int(w) < 0 else ''}${abs(int(w)):,}.00",
    ),  # the C locale's format
    "integer[]": (st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5), lambda w, s: s == w),
    "text[]": (st.lists(st.text(max_size=10).filter(lambda s: "\x00" not in s), max_size=5), lambda w, s: s == w),
}

# Values that Python's own types cannot hold, written as SQL literals: they map to Postgres's text.
SPECIAL = {
    "date": ["'infinity'", "'-infinity'", "'10000-01-01'", "'0044-03-15 BC'"],
    "timestamp": ["'infinity'", "'-infinity'", "'12000-06-01 10:00'", "'0100-01-01 00:00 BC'"],
    "timestamptz": ["'infinity'", "'-infinity'", "'12000-06-01 10:00+00'"],
    "time": ["'24:00'"],
    "timetz": ["'10:00+02'", "'23:59:59.999999-12'", "'24:00+00'"],
    "interval": ["'178000000 years'", "'-178000000 years'"],
    "numeric": ["'NaN'", "'Infinity'", "'-Infinity'"],
}


@pytest.fixture(scope="module")
def value_db(pg_server: str, template_db: str) -> psycopg.Connection:
    """One database for the whole module, read with the workers' session and loaders."""
    import uuid

    from psycopg import sql

    name = f"{template_db}_values_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template_db))
        )
    url = psycopg.conninfo.make_conninfo(pg_server, dbname=name)
    conn = connect(url, purpose="test")
    yield conn
    conn.close()
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _sent(conn: psycopg.Connection, pg_type: str, literal_sql: str, params: tuple = ()) -> Any:
    """What the record carries for one value: written, read back as the worker reads, serialized."""
    _, rows = fetch(conn, f"SELECT ({literal_sql})::{pg_type} AS v", params)
    return orjson.loads(records.dumps(records.to_record(["v"], rows[0], "1")))["v"]


@pytest.mark.parametrize("pg_type", sorted(TYPES))
def test_generated_values_map_as_documented(value_db: psycopg.Connection, pg_type: str) -> None:
    strategy, check = TYPES[pg_type]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(strategy)
    def one(value: Any) -> None:
        param = _json_text(value) if pg_type == "jsonb" else value
        sent = _sent(value_db, pg_type, "%s", (param,))
        assert check(value, sent), (value, sent)

    one()


@pytest.mark.parametrize("pg_type,literal", [(t, lit) for t, lits in SPECIAL.items() for lit in lits])
def test_values_python_cannot_hold_arrive_as_postgres_text(
    value_db: psycopg.Connection, pg_type: str, literal: str
) -> None:
    sent = _sent(value_db, pg_type, literal)
    expected = value_db.execute(f"SELECT ({literal})::{pg_type}::text").fetchone()[0]
    if pg_type == "interval":
        assert isinstance(sent, float) and abs(sent) == 178_000_000 * 365 * 86400.0
    elif pg_type == "timetz" and not literal.startswith("'24"):
        assert dt.time.fromisoformat(sent).utcoffset() is not None
    else:
        assert sent == expected, (literal, sent, expected)
