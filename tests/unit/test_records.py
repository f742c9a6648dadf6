"""records: rows to records and records to bytes, as the README's type mapping promises."""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from workerpool.runtime import records

SAFE = 2**53

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


def _wide_as_text(value):
    """The mapping stated independently of the implementation: integers at or past ±2^53 become text."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) >= SAFE else value
    if isinstance(value, list):
        return [_wide_as_text(v) for v in value]
    return {k: _wide_as_text(v) for k, v in value.items()}


def test_to_record_pairs_columns_with_values_and_the_key_wins_as_object_id():
    record = records.to_record(["id", "name", "objectID"], [7, "seven", "from a column"], "7")
    assert record == {"id": 7, "name": "seven", "objectID": "7"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SAFE - 1, SAFE - 1),
        (SAFE, str(SAFE)),
        (-SAFE, str(-SAFE)),
        (-(SAFE - 1), -(SAFE - 1)),
        (2**63 - 1, str(2**63 - 1)),
        (2**64, str(2**64)),  # past what orjson can write as an integer at all
        (True, True),
    ],
)
def test_integers_past_2_53_become_strings(value, expected):
    assert orjson.loads(records.dumps({"n": value, "nested": [{"n": value}]})) == {
        "n": expected,
        "nested": [{"n": expected}],
    }


@given(json_values)
def test_dumps_writes_wide_integers_as_text_anywhere_and_leaves_the_rest(value):
    assert orjson.loads(records.dumps(value)) == _wide_as_text(value)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_numeric_never_loses_a_digit(value):
    """A numeric becomes a JSON number only when that number is exactly the value; otherwise its text."""
    out = orjson.loads(records.dumps(value))
    if isinstance(out, str):
        assert Decimal(out) == value
    else:
        assert isinstance(out, (int, float)) and not isinstance(out, bool)
        assert Decimal(repr(out)) == value
        if isinstance(out, int):
            assert abs(out) < SAFE


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("19.99"), 19.99),
        (Decimal("3.00"), 3),
        (Decimal("0.1"), 0.1),
        (Decimal("1.00000000000000000001"), "1.00000000000000000001"),
        (Decimal("12345678901234567890"), "12345678901234567890"),
        (Decimal("NaN"), "NaN"),
        (Decimal("-Infinity"), "-Infinity"),
        (b"\x00\xffab", base64.b64encode(b"\x00\xffab").decode()),
        (memoryview(b"xy"), "eHk="),
        (dt.timedelta(hours=1, microseconds=500_000), 3600.5),
        (float("nan"), None),
        (dt.date(2024, 2, 29), "2024-02-29"),
    ],
)
def test_postgres_values_map_as_documented(value, expected):
    assert orjson.loads(records.dumps({"v": value}))["v"] == expected


def _action(index: str, body: dict, version: int, replace: bool) -> dict:
    action, raw = records.versioned_action(index, records.dumps(body), version, replace)
    parsed = orjson.loads(raw)
    assert parsed["action"] == action
    return parsed


def test_a_partial_update_carries_its_version_as_increment_set():
    parsed = _action("products", {"objectID": "1", "name": "a"}, 42, replace=False)
    assert parsed == {
        "action": "partialUpdateObject",
        "indexName": "products",
        "body": {"objectID": "1", "name": "a", "_version": {"_operation": "IncrementSet", "value": 42}},
    }


def test_a_replacement_stores_its_version_as_a_plain_value():
    parsed = _action("products", {"objectID": "1", "name": "a"}, 42, replace=True)
    assert parsed == {
        "action": "updateObject",
        "indexName": "products",
        "body": {"objectID": "1", "name": "a", "_version": 42},
    }


@given(
    index=st.text(min_size=1, max_size=20),
    body=st.dictionaries(st.text(max_size=6).filter(lambda k: k != "_version"), json_values, max_size=5),
    version=st.integers(min_value=1, max_value=2**62),
    replace=st.booleans(),
)
def test_versioned_actions_are_valid_json_for_any_index_name_and_record(index, body, version, replace):
    parsed = _action(index, {**body, "objectID": "k"}, version, replace)
    assert parsed["indexName"] == index
    stored = parsed["body"].pop("_version")
    assert stored == (version if replace else {"_operation": "IncrementSet", "value": version})
    assert parsed["body"] == _wide_as_text({**body, "objectID": "k"})


def test_delete_actions_and_batch_bodies_are_valid_json():
    actions = [records.delete_action('we"ird\\index', "1"), records.delete_action("p", 'k"2')]
    assert orjson.loads(records.batch_body(actions)) == {
        "requests": [
            {"action": "deleteObject", "indexName": 'we"ird\\index', "body": {"objectID": "1"}},
            {"action": "deleteObject", "indexName": "p", "body": {"objectID": 'k"2'}},
        ]
    }
    assert orjson.loads(records.batch_body([])) == {"requests": []}


def test_hashes_tell_content_and_attribute_sets_apart():
    assert records.content_hash(b'{"a":1}') != records.content_hash(b'{"a":2}')
    assert len(records.content_hash(b"{}")) == 16
    assert records.shape_hash({"a": 1, "b": 2}) == records.shape_hash({"b": 3, "a": 4})
    assert records.shape_hash({"a": 1}) != records.shape_hash({"a": 1, "b": 2})


def _numeric_as_documented(value: Decimal):
    """The numeric mapping stated independently of the implementation: a whole number under 2^53 is
    an integer, a value a float holds exactly is that float, anything else (NaN, ±Infinity, more
    digits than a float holds) is its text, every digit written out as Postgres writes a numeric
    (`1E+309` of a `json` value as 1 and 309 zeros)."""
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value() and abs(value) < SAFE:
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else format(value, "f")


numerics = (
    st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(places=2, min_value=-(10**10), max_value=10**10)  # numeric(12, 2): prices
    | st.integers(min_value=-(2**70), max_value=2**70).map(Decimal)
    | st.builds(lambda d, e: Decimal(d).scaleb(e), st.integers(-(10**20), 10**20), st.integers(-400, 400))
)


@given(numerics)
def test_numeric_values_map_to_the_documented_json(value):
    got = orjson.loads(records.dumps({"v": value}))["v"]
    expected = _numeric_as_documented(value)
    assert got == expected and type(got) is type(expected)
