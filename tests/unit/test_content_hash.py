"""ops/hashes canonical and content_hash (what verify compares): one hash per record content however
Algolia writes numbers back, and the fast path (no integral float in the JSON) agreeing with the slow one."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import orjson
import xxhash
from hypothesis import given
from hypothesis import strategies as st

from workerpool.ops.hashes import canonical, content_hash, sorted_body_hash
from workerpool.runtime import records

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([15.0, -0.0, 1e15, 2.0**53, 2.5, 1e300])
    | st.text(alphabet="ab.0159 ", max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(alphabet="abc.0", max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)


def _slow_hash(record) -> bytes:
    return xxhash.xxh3_128_digest(orjson.dumps(canonical(record), option=orjson.OPT_SORT_KEYS))


def test_canonical_turns_integral_floats_below_2_53_into_integers():
    assert canonical({"a": [15.0, 15.5, {"b": -3.0}], "c": "15.0", "d": True}) == {
        "a": [15, 15.5, {"b": -3}],
        "c": "15.0",
        "d": True,
    }
    assert type(canonical(15.0)) is int
    assert type(canonical(2.0**53)) is float  # past 2^53 a float is not one exact integer


@given(json_values)
def test_the_fast_path_hashes_as_the_canonical_form_does(record):
    assert content_hash(record) == _slow_hash(record)


@given(st.dictionaries(st.text(max_size=4), json_values, max_size=6))
def test_key_order_does_not_change_the_hash(record):
    assert content_hash(dict(reversed(list(record.items())))) == content_hash(record)


def test_integral_floats_and_integers_hash_alike_and_text_does_not():
    assert content_hash({"price": 15.0, "n": [1.0]}) == content_hash({"price": 15, "n": [1]})
    assert content_hash({"price": 15.5}) != content_hash({"price": 15})
    assert content_hash({"price": "15.0"}) != content_hash({"price": 15})
    assert content_hash({"v": "release 1.0"}) != content_hash({"v": "release 1"})
    assert len(content_hash({})) == 16


row_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.decimals(allow_nan=False, allow_infinity=False, places=3)
    | st.dates()
    | st.sampled_from([15.0, -0.0, 1e15, 2.0**53, 2.5, "1.0", "a\\tb"])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=4), row_values, max_size=6))
def test_the_sorted_body_hashes_as_the_record_the_worker_sends(record):
    """verify hashes the sorted body `Shaper.serialize` writes; the index holds the worker's body."""
    sent = orjson.loads(records.dumps(record))
    assert sorted_body_hash(records.dumps(record, sort_keys=True)) == content_hash(sent)


def test_a_sorted_body_is_the_sent_body_reordered():
    record = {"b": Decimal("1.50"), "a": [2.0, {"z": 1, "y": 2**60}], "c": date(2026, 1, 2)}
    sorted_body, body = records.dumps(record, sort_keys=True), records.dumps(record)
    assert len(sorted_body) == len(body)
    assert orjson.loads(sorted_body) == orjson.loads(body)
