"""How the workers' connections read Postgres values, so that every value a table can hold maps.

Two things make a record depend on the row alone, and make every value loadable:

- **Pinned settings** (`pooling.PINNED`): DateStyle ISO, TimeZone UTC, IntervalStyle postgres,
  shortest exact float text and the C locale's money format, set with SET LOCAL around every read of
  rows or keys (`pooling.pinned`). Timestamps come out in UTC whatever the server's, the role's, the
  environment's or a pooler's defaults, and key text matches what the capture triggers wrote.
- **Loaders that never raise on a legal value** (`configure`, `tolerant`): psycopg turns dates and
  times into Python objects, which cannot hold ±infinity, years past 9999 or before 1, or `24:00`.
  Those values are sent as Postgres writes them (`infinity`, `10000-01-01`, `0044-03-15 BC`,
  `24:00:00`). Dates and timestamps are read with psycopg's C loaders alone; a batch holding one that
  Python cannot hold is read again through `tolerant`'s loaders, which wrap them in Python (a wrapper
  on every value would cost ~0.3 us each, for values almost no table has). `timetz` becomes an ISO 8601
  string (`10:00:00+02:00`), and so does `time`.
  Arrays of types psycopg does not know (enums, most extensions' types) become lists of text.
  JSON that orjson refuses (a number beyond double range such as `1e400`, an integer past 64 bits)
  is parsed again with exact decimals, which the record serializer then writes without losing a digit.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from psycopg.abc import AdaptContext
from psycopg.adapt import AdaptersMap, Buffer, Loader
from psycopg.pq import Format
from psycopg.types.array import ArrayLoader

_PASS_THROUGH_ON_ERROR = ("date", "timestamp", "timestamptz")


# 19 digits in a row: a number orjson may not hold (it turns integers past 64 bits into floats,
# silently, and raises on `1e400`). Rare in real documents, and then parsed exactly instead. Found
# as a substring of the text with every digit made "0" and every other byte a space: two passes in
# C, a third of the CPU of a regular expression's search.
_LONG_DIGITS = b"0" * 19
_DIGITS_AS_ZERO = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))


def json_loads(data: str | bytes) -> Any:
    """orjson, or exact decimals and integers where orjson would lose digits or refuse the number."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if _LONG_DIGITS not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw, parse_float=Decimal, parse_constant=Decimal)


class _Fallback(Loader):
    """psycopg's own loader for the type, or the value's text where Python cannot hold it."""

    inner: type[Loader]

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._load = self.inner(oid, context).load

    def load(self, data: Buffer) -> Any:
        try:
            return self._load(data)
        except (psycopg.DataError, ValueError, OverflowError):
            return bytes(data).decode()


class _TimeText(_Fallback):
    """`time` and `timetz` as ISO 8601 text: orjson cannot write a time that carries an offset, and
    orjson 3.13 writes time(0, 0, 0, 10000) as `00:00:00.10000` (a tenth instead of a hundredth)."""

    def load(self, data: Buffer) -> Any:
        value = super().load(data)
        return value if isinstance(value, str) else value.isoformat()


class _Json(Loader):
    """`json` and `jsonb` through `json_loads`, one Python call per value (psycopg's own loader
    adds a second around it)."""

    def load(self, data: Buffer) -> Any:
        return json_loads(bytes(data))


_INTERVAL_PART = re.compile(r"([+-]?\d+) (year|mon|day)s?|([+-])?(\d+):(\d+):(\d+(?:\.\d+)?)")
_UNIT_SECONDS = {"year": 365 * 86400, "mon": 30 * 86400, "day": 86400}


class _IntervalSeconds(Loader):
    """`interval` as seconds (a year is 365 days, a month 30, as psycopg counts them). Parsed here
    with Python integers: psycopg's C loader silently wraps around past ~5.8 million years."""

    def load(self, data: Buffer) -> float:
        total = 0.0
        for amount, unit, sign, hours, minutes, seconds in _INTERVAL_PART.findall(bytes(data).decode()):
            if unit:
                total += int(amount) * _UNIT_SECONDS[unit]
            else:
                part = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
                total += -part if sign == "-" else part
        return total


_TEXT_OID = 25
_UNKNOWN_OID = 0  # what psycopg falls back to for a type it has no loader for


class _TextArray(ArrayLoader):
    base_oid = _TEXT_OID


class _UserType(Loader):
    """A type psycopg does not know (an enum, a domain's array, an extension's type): its text, and
    an array of them (an enum[]) as a list of texts instead of the literal `{red,green}`."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._array = _TextArray(oid, context)

    def load(self, data: Buffer) -> Any:
        if data[:1] == b"{":
            return self._array.load(data)
        return bytes(data).decode()


def _wrap(adapters: AdaptersMap, names: tuple[str, ...]) -> None:
    for name in names:
        info = adapters.types.get(name)
        if info is None:
            continue
        base = _TimeText if name in ("time", "timetz") else _Fallback
        inner = adapters.get_loader(info.oid, Format.TEXT)
        if inner is None or issubclass(inner, _Fallback):
            continue
        adapters.register_loader(info.oid, type(f"{name.title()}Loader", (base,), {"inner": inner}))


def configure(conn: psycopg.Connection) -> None:
    """Register the loaders above on one connection (never globally: embedding applications keep theirs)."""
    adapters = conn.adapters
    _wrap(adapters, ("time", "timetz"))
    adapters.register_loader("interval", _IntervalSeconds)
    adapters.register_loader(_UNKNOWN_OID, _UserType)
    adapters.register_loader("json", _Json)
    adapters.register_loader("jsonb", _Json)


def tolerant(cursor: psycopg.Cursor[Any]) -> None:
    """On one cursor of a configured connection: dates and timestamps that Python cannot hold are read
    as their text instead of raising. For reading a batch again after `is_unloadable`."""
    _wrap(cursor.adapters, _PASS_THROUGH_ON_ERROR)


def is_unloadable(exc: BaseException) -> bool:
    """Whether `exc` is psycopg failing to turn a value the server sent into a Python object (not
    an error the server raised)."""
    if isinstance(exc, psycopg.Error):
        return isinstance(exc, psycopg.DataError) and exc.sqlstate is None
    return isinstance(exc, (ValueError, OverflowError))
