"""Rows to Algolia records, and records to request bytes.

Type mapping (documented in README): numeric becomes a JSON number when a float holds it exactly
(prices, counts), otherwise a string, so that no digit is ever silently lost, and so do integers
beyond ±2^53; timestamptz, date and time become ISO 8601 strings (see pgtypes for the values Python
cannot hold); uuid a string; jsonb and arrays stay structured; bytea base64; interval seconds as a
number; float NaN and ±Infinity null; NULL null. `objectID` is always the key as text (an integer objectID is a
protocol error).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import orjson
import xxhash

from workerpool.runtime.model import DELETE, PARTIAL_UPDATE, UPDATE, Action

OBJECT_ID = "objectID"
_MAX_SAFE_INT = 2**53


def json_default(value: Any) -> Any:
    """orjson's fallback for the Postgres types it does not know."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        as_float = float(value)
        text = repr(as_float)
        # The float holds the value exactly when its shortest repr reads back as the same number; a
        # numeric printed as that very text (604.73) needs no Decimal built to tell.
        if text != str(value) and Decimal(text) != value:
            return _every_digit(value)
        return int(as_float) if as_float.is_integer() and abs(as_float) < _MAX_SAFE_INT else as_float
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _every_digit(value: Decimal) -> str:
    """A number a double cannot hold, as text of every digit (`1e400` of a `json` column as jsonb and
    numeric print it: 1 and 400 zeros, not `1E+400`). Past the range of Postgres's numeric type
    (which only `json` text can exceed) in exponent form: positional text of `1e1000000000` would
    take a gigabyte."""
    if -16383 <= value.adjusted() < 131072:
        return format(value, "f")
    return str(value)


def dumps(value: Any, *, sort_keys: bool = False) -> bytes:
    """orjson with the project's type mapping (`sort_keys`: objects' keys in sorted order).

    Integers beyond ±2^53 (bigint columns, jsonb) become strings, as numeric does: JavaScript and
    Algolia's numeric filters would round them. orjson finds them in C (OPT_STRICT_INTEGER); only a
    record that has one is walked in Python.
    """
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    try:
        return orjson.dumps(value, default=json_default, option=option | orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:
        return orjson.dumps(_wide_integers_as_text(value), default=json_default, option=option)


def _wide_integers_as_text(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) >= _MAX_SAFE_INT else value
    if isinstance(value, dict):
        return {k: _wide_integers_as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wide_integers_as_text(v) for v in value]
    return value


def to_record(columns: Iterable[str], values: Iterable[Any], object_id: str) -> dict[str, Any]:
    """A record: the row's columns with their values (as the worker reads them: a tuple per row, the
    names once per query), plus objectID."""
    record = dict(zip(columns, values, strict=True))
    record[OBJECT_ID] = object_id
    return record


_DELETE_HEAD = b'{"action":"' + DELETE.encode() + b'","indexName":'


def delete_action(index_name: str, object_id: str) -> bytes:
    """A multipleBatch request that deletes a record (deleting a missing record is not an error)."""
    return _DELETE_HEAD + orjson.dumps(index_name) + b',"body":{"objectID":' + orjson.dumps(object_id) + b"}}"


def batch_body(actions: Iterable[bytes]) -> bytes:
    """The body of `POST /1/indexes/*/batch` from already serialized actions."""
    return b'{"requests":[' + b",".join(actions) + b"]}"


VERSION = "_version"


def content_hash(record_body: bytes) -> bytes:
    """What identifies a record's content, to skip sending it again unchanged: XXH3-128 of its JSON.
    Not a cryptographic hash, as none is needed: it tells a record from its own earlier content, and
    a collision crafted by whoever writes a row could only keep that row's new content from being sent."""
    return xxhash.xxh3_128_digest(record_body)


def shape_hash(record: Mapping[str, Any]) -> bytes:
    """What identifies a record's set of attribute names."""
    return hashlib.blake2b("\0".join(sorted(record)).encode(), digest_size=8).digest()


def versioned_action(index_name: str, record_body: bytes, version: int, replace: bool) -> tuple[Action, bytes]:
    """A write that Algolia ignores when the index already holds a newer version of the record.

    A partial update carrying every attribute with `_version` as an `IncrementSet` is ignored whole
    when its version is not above the stored one. A partial update cannot remove attributes, so a
    record whose attribute set changed is replaced whole instead (`replace`), its version stored as
    a plain value. `record_body` is the record serialized without `_version`.
    """
    action = UPDATE if replace else PARTIAL_UPDATE
    tail = _REPLACE_TAIL % version if replace else _INCREMENT_TAIL % version
    return action, _action_head(action, index_name) + record_body[:-1] + tail


_REPLACE_TAIL = b',"' + VERSION.encode() + b'":%d}}'
_INCREMENT_TAIL = b',"' + VERSION.encode() + b'":{"_operation":"IncrementSet","value":%d}}}'


@functools.lru_cache(maxsize=1024)
def _action_head(action: Action, index_name: str) -> bytes:
    """The bytes of an action up to its body, the same for every record of an index: built once."""
    return b'{"action":"' + action.encode() + b'","indexName":' + orjson.dumps(index_name) + b',"body":'
