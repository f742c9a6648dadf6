"""Rules about one record: objectID checks, the size limit, partial updates, projection, matching.

Pure functions; ``state`` applies them to the stored indices under its lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from workerpool.emulator.common import MISSING, NUMBER_TYPES, ApiError, Record

RECORD_SIZE_DOC_URL = (
    "https://www.algolia.com/doc/guides/sending-and-managing-data/prepare-your-data/in-depth/"
    "index-and-records-size-and-usage-limitations/#record-size-limits"
)
RECORD_ACTIONS = frozenset(
    {"addObject", "updateObject", "partialUpdateObject", "partialUpdateObjectNoCreate", "deleteObject"}
)
_NUMERIC_OPS = frozenset({"IncrementSet", "IncrementFrom", "Increment", "Decrement"})


def check_object_id(oid: Any, action: str, pos: int) -> str:
    """``oid`` if it is a non-empty string; otherwise the ApiError Algolia answers for request ``pos``."""
    if type(oid) is str and oid:
        return oid
    if oid is MISSING or oid is None or oid == "":
        raise ApiError(
            400,
            f"The 'objectID' attribute is required to use action={action} (record at the position {pos})",
            position=pos,
        )
    raise ApiError(
        400,
        f"Record at the position {pos}: objectID must be a string, got {type(oid).__name__} "
        f"{orjson.dumps(oid).decode()[:100]}",
        position=pos,
    )


def too_big(pos: int, oid: str, size: int, limit: int) -> ApiError:
    """Algolia's error for a record of ``size`` bytes over ``limit``."""
    return ApiError(
        400,
        f"Record at the position {pos} objectID={oid} is too big size={size}/{limit} bytes. "
        f"Please have a look at {RECORD_SIZE_DOC_URL}",
        position=pos,
        objectID=oid,
    )


def _as_list(value: Any) -> list[Any]:
    if value is MISSING or value is None:
        return []
    return list(value) if type(value) is list else [value]


def partial_update(current: Record | None, body: Record, oid: str) -> Record | None:
    """The record after applying a partial update, or None when a version check ignores it.

    Per Algolia's docs, ``IncrementFrom``/``IncrementSet`` that fail their condition make the
    engine ignore the *whole* object update. A missing record or attribute counts as 0, which
    gives the documented creation rules (IncrementFrom creates only with 0, IncrementSet only
    with a value > 0).
    """
    rec: Record = dict(current) if current is not None else {"objectID": oid}
    for key, value in body.items():
        if type(value) is not dict or "_operation" not in value:
            rec[key] = value
            continue
        op = value["_operation"]
        arg: Any = value.get("value")
        old = rec.get(key, MISSING)
        if op in _NUMERIC_OPS:
            if type(arg) not in NUMBER_TYPES:
                raise ApiError(400, f"Invalid value for operation {op} on attribute {key}: a number is expected")
            base = old if type(old) in NUMBER_TYPES else 0
            if op == "IncrementSet":
                if arg <= base:
                    return None
                rec[key] = arg
            elif op == "IncrementFrom":
                if arg != base:
                    return None
                rec[key] = base + 1
            elif op == "Increment":
                rec[key] = base + arg
            else:
                rec[key] = base - arg
        elif op == "Add":
            rec[key] = [*_as_list(old), arg]
        elif op == "AddUnique":
            items = _as_list(old)
            if arg not in items:
                items.append(arg)
            rec[key] = items
        elif op == "Remove":
            if old is not MISSING:
                rec[key] = [x for x in _as_list(old) if x != arg]
        else:
            raise ApiError(400, f"Invalid operation {op!r} on attribute {key}")
    rec["objectID"] = oid
    return rec


def project(rec: Record, attributes: list[str] | None) -> Record:
    """``attributesToRetrieve``: keep those attributes (objectID always); with ``*``, every attribute
    but those named with a leading ``-`` (``["*", "-price"]``)."""
    if not attributes:
        return rec
    if "*" in attributes:
        excluded = {name[1:] for name in attributes if name.startswith("-") and name[1:] != "objectID"}
        return {k: v for k, v in rec.items() if k not in excluded} if excluded else rec
    out = {"objectID": rec.get("objectID")}
    for name in attributes:
        if name in rec:
            out[name] = rec[name]
    return out


def parse_attributes(value: Any) -> list[str] | None:
    """``attributesToRetrieve`` as sent: a JSON list, a JSON list in a string, or comma-separated names."""
    if value is None:
        return None
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in orjson.loads(text)]
        except orjson.JSONDecodeError:
            pass
    return [part.strip() for part in text.split(",") if part.strip()]


def matcher(query: str, settings: Record) -> Callable[[Record], bool] | None:
    """Case-insensitive substring match over string values (or searchableAttributes if set);
    None for an empty query, which matches everything."""
    q = query.strip().lower()
    if not q:
        return None
    attrs: list[str] | None = None
    searchable = settings.get("searchableAttributes")
    if isinstance(searchable, list) and searchable:
        attrs = []
        for item in searchable:
            for part in str(item).split(","):
                part = part.strip()
                if part.startswith("unordered(") and part.endswith(")"):
                    part = part[len("unordered(") : -1]
                attrs.append(part)

    def match(rec: Record) -> bool:
        values = rec.values() if attrs is None else [rec.get(a) for a in attrs]
        for v in values:
            if type(v) is str:
                if q in v.lower():
                    return True
            elif type(v) is list:
                for x in v:
                    if type(x) is str and q in x.lower():
                        return True
        return False

    return match
