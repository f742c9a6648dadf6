"""A composite key's objectID, for generated key values: written by the capture trigger under any
session settings, it is the same canonical text the table walk and the API write, it finds exactly
its row again (each part cast back to its column's type), and no two rows share one.

Key parts are generated of several types per part: text with the array literal's separators and
escapes (commas, braces, quotes, backslashes, white space, the word NULL, the empty string),
numerics, timestamps with time zone and uuids.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from workerpool import enqueue
from workerpool.capture import keys
from workerpool.capture.model import find_watched
from workerpool.capture.triggers import watch
from workerpool.db import pooling
from workerpool.ops.table_walk import iter_key_chunks

TABLE = """
CREATE TABLE parts (
    label  text NOT NULL,
    amount numeric NOT NULL,
    at     timestamptz NOT NULL,
    ref    uuid NOT NULL,
    body   text,
    PRIMARY KEY (label, amount, at, ref)
)
"""

_text = st.lists(
    st.sampled_from([*'ab,{}"\\ \t\n()é', "NULL", "null"]) | st.characters(codec="utf-8", exclude_characters="\x00"),
    max_size=8,
).map("".join)
_amount = st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-(10**9), max_value=10**9)
_at = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
_key = st.tuples(_text, _amount, _at, st.uuids())


def _captured(conn: psycopg.Connection, key: tuple) -> str:
    conn.execute("DELETE FROM algolia_sync_inbox")
    conn.execute("INSERT INTO parts (label, amount, at, ref) VALUES (%s, %s, %s, %s)", key)
    (ids,) = conn.execute("SELECT record_ids FROM algolia_sync_inbox").fetchone()
    assert len(ids) == 1
    return ids[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_key, second=_key)
def test_composite_objectids_are_canonical_and_reversible(db, first, second):
    if not db.execute("SELECT to_regclass('parts')").fetchone()[0]:
        db.execute(TABLE)
        watch(db, "parts", "parts")
    watched = find_watched(db, "parts")
    with db.transaction(force_rollback=True):
        # The writer's own settings change nothing (the trigger pins them).
        db.execute("SET LOCAL TimeZone = 'Asia/Kolkata'")
        db.execute("SET LOCAL DateStyle = 'SQL, DMY'")
        db.execute("SET LOCAL extra_float_digits = -3")
        oid = _captured(db, first)
        db.execute("SET LOCAL DateStyle = 'ISO, YMD'")  # for this test's own reads of timestamps
        # The array literal of the parts' canonical texts: quoting keeps every part whole.
        parts = db.execute("SELECT %s::text[]", (oid,)).fetchone()[0]
        assert len(parts) == 4
        assert parts[0] == first[0]
        assert Decimal(parts[1]) == first[1]
        assert parts[2].endswith("+00")  # UTC whatever the writer's zone
        assert uuid.UUID(parts[3]) == first[3]
        # Each part cast back to its column's type finds exactly this row.
        found = db.execute(
            sql.SQL("SELECT label, amount, at, ref FROM parts s WHERE {}").format(
                keys.matches(watched, "s", sql.Literal(oid))
            )
        ).fetchall()
        assert found == [(first[0], first[1], first[2], first[3])]
        # The table walk and the API write the same text; it is its own canonical form.
        with pooling.pinned(db):
            assert [k for chunk in iter_key_chunks(db, watched, 10) for k in chunk] == [oid]
            assert (
                db.execute(sql.SQL("SELECT {}").format(keys.canonical(watched, sql.Literal(oid)))).fetchone()[0] == oid
            )
        enqueue(db, "parts", [(first[0], str(first[1]), first[2].isoformat(), str(first[3]))])
        assert db.execute("SELECT record_id FROM algolia_sync_queue").fetchone()[0] == oid
        # Another row's key is another objectID (equal values are one row: 1.5 = 1.50 for numeric).
        if second != first:
            db.execute("SET LOCAL DateStyle = 'SQL, DMY'")
            assert _captured(db, second) != oid


def test_a_key_change_in_any_part_deletes_the_old_objectid(db):
    db.execute(TABLE)
    watch(db, "parts", "parts")
    at = datetime(2024, 1, 1, tzinfo=UTC)
    ref = uuid.uuid4()
    db.execute("INSERT INTO parts VALUES ('a,b', 1.50, %s, %s, 'x')", (at, ref))
    db.execute("DELETE FROM algolia_sync_inbox")
    db.execute("UPDATE parts SET at = at + interval '1 day', body = 'y'")
    rows = db.execute("SELECT operation, record_ids FROM algolia_sync_inbox ORDER BY operation").fetchall()
    day = (at + timedelta(days=1)).strftime("%Y-%m-%d")
    assert rows == [
        ("DELETE", [f'{{"a,b",1.50,"2024-01-01 00:00:00+00",{ref}}}']),
        ("UPDATE", [f'{{"a,b",1.50,"{day} 00:00:00+00",{ref}}}']),
    ]
