"""pgtypes.json_loads: JSON from json/jsonb columns, never losing a digit that orjson would."""

from __future__ import annotations

import re
from decimal import Decimal

import orjson
from hypothesis import given
from hypothesis import strategies as st

from workerpool.db import pgtypes
from workerpool.db.pgtypes import json_loads


@given(st.lists(st.integers(min_value=-(10**40), max_value=10**40), max_size=6))
def test_integers_of_any_size_keep_every_digit(values):
    loaded = json_loads(str(values))  # a Python list of ints prints as its JSON
    assert loaded == values and all(type(v) is int for v in loaded)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=None))
def test_a_number_with_a_long_run_of_digits_is_read_exactly(value):
    text = f'{{"v": {value}}}'
    loaded = json_loads(text)["v"]
    try:
        fast = orjson.loads(text)["v"]
    except orjson.JSONDecodeError:  # beyond a double's range: orjson refuses it
        fast = None
    if fast is None or re.search(r"[0-9]{19}", text):
        assert Decimal(loaded) == value  # exact, however long
    else:
        assert loaded == fast  # what orjson reads, at its speed


@given(st.binary(max_size=80) | st.text(alphabet="0123456789 .e-x", max_size=80).map(str.encode))
def test_the_long_run_check_finds_what_a_regular_expression_finds(raw):
    found = pgtypes._LONG_DIGITS in raw.translate(pgtypes._DIGITS_AS_ZERO)
    assert found == bool(re.search(rb"[0-9]{19}", raw))


def test_a_document_orjson_refuses_is_parsed_exactly():
    assert json_loads(b'{"v": 1e400}') == {"v": Decimal("1e400")}
