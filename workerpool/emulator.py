"""A local HTTP server that speaks Algolia's Search REST API (the part this project uses).

Algolia cannot be reached from tests, benchmarks or demos, so they all point the real,
unmodified ``algoliasearch`` v4 client at this emulator over real HTTP (``make_client``).
What it covers:

* writes: ``/1/indexes/*/batch``, ``/1/indexes/{i}/batch`` and the single-record endpoints, with
  every batch action and the built-in partial-update operations (``Increment``, ``Decrement``,
  ``Add``, ``Remove``, ``AddUnique``, ``IncrementFrom``, ``IncrementSet``). A batch is atomic
  here: any invalid request in it (bad objectID, record over the size limit) rejects it whole.
  Writes are applied synchronously, so every task is immediately ``published``.
* reads: get object(s), cursor browse, a naive substring search, settings, list indices, tasks;
  index copy/move, clear and delete.
* Algolia's auth (403) and error shape ``{"message": ..., "status": ...}``.
* test hooks under ``/_emulator/`` (no auth; loopback clients only), mirrored by methods of
  ``Emulator`` since tests often run workers in other processes:

  - ``GET /_emulator/stats``: ``requests`` (every ``/1/`` request, rejected ones included),
    ``batch_requests`` (``*/batch`` and ``{i}/batch`` calls that got past faults and auth),
    ``record_writes`` ({index: record-level actions of accepted batches and single-record
    writes, including updates ignored by IncrementSet/IncrementFrom, which Algolia also counts
    as operations}), ``record_writes_total``, ``ignored_writes``, ``rejected`` (``429``,
    ``5xx``, ``dropped``, ``400``, ``403``, ``404`` answers), ``faults_pending``, ``indices``
    ({index: record count}).
  - ``POST /_emulator/reset``: drop indices, counters and faults.
  - ``POST /_emulator/faults`` with one fault or a list: ``{"status": 429, "retry_after": 1,
    "count": N}``, ``{"status": 503, "seconds": S}``, ``{"drop": true, "count": N}``,
    ``{"latency_ms": M, "seconds": S}``, each optionally ``"writes_only": true``;
    ``GET`` lists them, ``DELETE`` clears them.
  - ``POST /_emulator/rtt`` with ``{"rtt_ms": 60, "jitter_ms": 10}``: every ``/1/`` answer waits
    that round trip (± jitter) from then on; reset clears it.
  - ``GET /_emulator/indexes/{i}``: every record as ``{objectID: record}``.
  - ``GET /_emulator/health``: ``{"ok": true}``.

State lives in memory behind a single lock. Stored records are never mutated in place (partial
updates copy the record), so readers can serialize them outside the lock.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import ipaddress
import itertools
import logging
import random
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from copy import deepcopy
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson

if TYPE_CHECKING:  # the client is heavy to import; the server itself never needs it
    from algoliasearch.search.client import SearchClientSync

log = logging.getLogger("workerpool.emulator")

DEFAULT_APP_ID = "EMULATOR"
DEFAULT_API_KEY = "emulator-admin-key"
DEFAULT_MAX_RECORD_BYTES = 10_000
EXIT_PORT_IN_USE = 2
EXIT_REFUSED = 2  # a bad --port, or a --host it will not serve (see refuse_unsafe_bind)

RECORD_SIZE_DOC_URL = (
    "https://www.algolia.com/doc/guides/sending-and-managing-data/prepare-your-data/in-depth/"
    "index-and-records-size-and-usage-limitations/#record-size-limits"
)
MAX_HITS_PER_PAGE = 1000
_BROWSE_SNAPSHOTS = 64  # open browse cursors kept; the oldest is dropped beyond this
_BROWSE_TTL_S = 600.0
_LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
_MISSING: Any = object()


class ApiError(Exception):
    """An error answered in Algolia's shape: ``{"message": ..., "status": ...}`` (+ extra keys)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.payload = {"message": message, **extra, "status": status}


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES


def _loads(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid JSON: {exc}") from None


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


class _Index:
    """One index: records keyed by objectID, settings, timestamps."""

    __slots__ = ("created_at", "records", "settings", "updated_at")

    def __init__(self) -> None:
        now = _now_iso()
        self.records: dict[str, dict] = {}
        self.settings: dict[str, Any] = {}
        self.created_at = now
        self.updated_at = now


class _Fault:
    """One queued fault; ``remaining``/``deadline`` of None mean unlimited."""

    __slots__ = ("deadline", "drop", "latency_ms", "remaining", "retry_after", "status", "writes_only")

    def __init__(
        self,
        status: int | None,
        retry_after: int | None,
        drop: bool,
        latency_ms: float,
        remaining: int | None,
        deadline: float | None,
        writes_only: bool,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.drop = drop
        self.latency_ms = latency_ms
        self.remaining = remaining
        self.deadline = deadline
        self.writes_only = writes_only

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"writes_only": self.writes_only}
        if self.status is not None:
            out["status"] = self.status
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.drop:
            out["drop"] = True
        if self.latency_ms:
            out["latency_ms"] = self.latency_ms
        if self.remaining is not None:
            out["count"] = self.remaining
        if self.deadline is not None:
            out["seconds"] = round(max(0.0, self.deadline - time.monotonic()), 3)
        return out


def _build_fault(
    *,
    status: int | None = None,
    retry_after: int | None = None,
    count: int | None = None,
    seconds: float | None = None,
    drop: bool = False,
    latency_ms: float | None = None,
    writes_only: bool = False,
) -> _Fault:
    """A validated fault (see ``EmulatorState.inject_fault``); ValueError if it makes no sense."""
    if status is None and not drop and not latency_ms:
        raise ValueError("a fault needs one of: status, drop, latency_ms")
    if status is not None and drop:
        raise ValueError("a fault cannot both answer a status and drop the connection")
    if status is not None and not (type(status) is int and 400 <= status <= 599):
        raise ValueError(f"status must be an HTTP error code (400-599), got {status!r}")
    if count is not None and (type(count) is not int or count < 1):
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if seconds is not None and not (_is_number(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if latency_ms is not None and not (_is_number(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency_ms must be a non-negative number, got {latency_ms!r}")
    if status == 429 and retry_after is None:
        retry_after = 1
    return _Fault(
        status,
        retry_after,
        bool(drop),
        float(latency_ms or 0),
        count,
        None if seconds is None else time.monotonic() + seconds,
        bool(writes_only),
    )


def _check_object_id(oid: Any, action: str, pos: int) -> str:
    if type(oid) is str and oid:
        return oid
    if oid is _MISSING or oid is None or oid == "":
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


def _too_big(pos: int, oid: str, size: int, limit: int) -> ApiError:
    return ApiError(
        400,
        f"Record at the position {pos} objectID={oid} is too big size={size}/{limit} bytes. "
        f"Please have a look at {RECORD_SIZE_DOC_URL}",
        position=pos,
        objectID=oid,
    )


def _as_list(value: Any) -> list:
    if value is _MISSING or value is None:
        return []
    return list(value) if type(value) is list else [value]


def _partial_update(current: dict | None, body: dict, oid: str) -> dict | None:
    """The record after applying a partial update, or None when a version check ignores it.

    Per Algolia's docs, ``IncrementFrom``/``IncrementSet`` that fail their condition make the
    engine ignore the *whole* object update. A missing record or attribute counts as 0, which
    gives the documented creation rules (IncrementFrom creates only with 0, IncrementSet only
    with a value > 0).
    """
    rec = dict(current) if current is not None else {"objectID": oid}
    for key, value in body.items():
        if type(value) is not dict or "_operation" not in value:
            rec[key] = value
            continue
        op = value["_operation"]
        arg = value.get("value")
        old = rec.get(key, _MISSING)
        if op in _NUMERIC_OPS:
            if type(arg) not in _NUMBER_TYPES:
                raise ApiError(400, f"Invalid value for operation {op} on attribute {key}: a number is expected")
            base = old if type(old) in _NUMBER_TYPES else 0
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
            rec[key] = _as_list(old) + [arg]
        elif op == "AddUnique":
            items = _as_list(old)
            if arg not in items:
                items.append(arg)
            rec[key] = items
        elif op == "Remove":
            if old is not _MISSING:
                rec[key] = [x for x in _as_list(old) if x != arg]
        else:
            raise ApiError(400, f"Invalid operation {op!r} on attribute {key}")
    rec["objectID"] = oid
    return rec


_NUMBER_TYPES = frozenset({int, float})  # bool is deliberately not a number here
_NUMERIC_OPS = frozenset({"IncrementSet", "IncrementFrom", "Increment", "Decrement"})


def _project(rec: dict, attributes: list[str] | None) -> dict:
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


def _parse_attributes(value: Any) -> list[str] | None:
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


def _search_params(body: Any) -> dict[str, Any]:
    """Body of a search/browse: JSON keys, plus the ``params`` url-encoded string form."""
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid search parameters")
    params = dict(body)
    raw = params.pop("params", None)
    if isinstance(raw, str) and raw:
        for key, value in parse_qsl(raw, keep_blank_values=True):
            params.setdefault(key, value)
    return params


def _int_param(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid value for {name}: {value!r}") from None
    return max(lo, min(hi, value))


def _matcher(query: str, settings: dict) -> Callable[[dict], bool] | None:
    """Case-insensitive substring match over string values (or searchableAttributes if set)."""
    q = query.strip().lower()
    if not q:
        return None
    attrs = None
    searchable = settings.get("searchableAttributes")
    if isinstance(searchable, list) and searchable:
        attrs = []
        for item in searchable:
            for part in str(item).split(","):
                part = part.strip()
                if part.startswith("unordered(") and part.endswith(")"):
                    part = part[len("unordered(") : -1]
                attrs.append(part)

    def match(rec: dict) -> bool:
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


class EmulatorState:
    """All indices, counters and queued faults of one emulator. Thread-safe.

    ``_lock`` guards indices, browse cursors and write counters; ``_meta_lock`` guards the
    request/rejection counters and the fault queue (checked on every request, before routing).
    """

    def __init__(self, app_id: str, api_key: str, max_record_bytes: int) -> None:
        self.app_id = app_id
        self.api_key = api_key
        self.max_record_bytes = max_record_bytes
        self._lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._tasks = itertools.count(1)
        self._reset_unlocked()

    def _reset_unlocked(self) -> None:
        self.indices: dict[str, _Index] = {}
        self._snapshots: OrderedDict[str, tuple[float, str, list[str], list[str] | None]] = OrderedDict()
        self._record_writes: dict[str, int] = {}
        self._batch_requests = 0
        self._ignored_writes = 0
        self._requests = 0
        self._rejected: dict[str, int] = {"429": 0, "5xx": 0, "dropped": 0, "400": 0, "403": 0, "404": 0}
        self._faults: list[_Fault] = []
        self.rtt_ms = 0.0
        self.rtt_jitter_ms = 0.0

    # -- test hooks -------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every index, counter and fault."""
        with self._lock, self._meta_lock:
            self._reset_unlocked()

    def stats(self) -> dict[str, Any]:
        """Counters since start/reset (see module docs of ``/_emulator/stats``)."""
        with self._lock:
            writes = dict(self._record_writes)
            batches = self._batch_requests
            ignored = self._ignored_writes
            entries = {name: len(idx.records) for name, idx in self.indices.items()}
        with self._meta_lock:
            return {
                "requests": self._requests,
                "batch_requests": batches,
                "record_writes": writes,
                "record_writes_total": sum(writes.values()),
                "ignored_writes": ignored,
                "rejected": dict(self._rejected),
                "faults_pending": len(self._faults),
                "indices": entries,
            }

    def records(self, index: str) -> dict[str, dict]:
        """A copy of every record of ``index`` as {objectID: record} ({} if it does not exist)."""
        with self._lock:
            idx = self.indices.get(index)
            snapshot = dict(idx.records) if idx is not None else {}
        return orjson.loads(orjson.dumps(snapshot))  # a deep copy, much faster than deepcopy

    def records_json(self, index: str) -> bytes:
        with self._lock:
            idx = self.indices.get(index)
            snapshot = dict(idx.records) if idx is not None else {}
        return orjson.dumps(snapshot)

    def inject_fault(
        self,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        count: int | None = None,
        seconds: float | None = None,
        drop: bool = False,
        latency_ms: float | None = None,
        writes_only: bool = False,
    ) -> None:
        """Queue a fault for ``/1/`` requests: an HTTP error ``status`` (with ``Retry-After`` for
        429), a dropped connection (``drop``) or added latency (``latency_ms``, which may also
        delay a status/drop fault). It lasts ``count`` requests and/or ``seconds``, whichever
        runs out first; with neither, until ``clear_faults``. ``writes_only`` spares reads."""
        self.inject_faults(
            [
                dict(
                    status=status,
                    retry_after=retry_after,
                    count=count,
                    seconds=seconds,
                    drop=drop,
                    latency_ms=latency_ms,
                    writes_only=writes_only,
                )
            ]
        )

    def inject_faults(self, specs: list[dict[str, Any]]) -> None:
        """Queue several faults (keyword dicts of ``inject_fault``): all of them or, if one is
        invalid (ValueError/TypeError), none."""
        faults = [_build_fault(**spec) for spec in specs]
        with self._meta_lock:
            self._faults.extend(faults)

    def clear_faults(self) -> None:
        """Remove every queued fault."""
        with self._meta_lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        with self._meta_lock:
            return [f.describe() for f in self._faults]

    # -- per-request bookkeeping ------------------------------------------------------------

    def count_request(self) -> None:
        with self._meta_lock:
            self._requests += 1

    def count_rejected(self, status: int | str) -> None:
        key = status if isinstance(status, str) else ("5xx" if 500 <= status <= 599 else str(status))
        with self._meta_lock:
            self._rejected[key] = self._rejected.get(key, 0) + 1

    def set_rtt(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        """Hold every `/1/` answer for a round trip of `rtt_ms`, ± up to `jitter_ms` (uniform): a far
        Algolia region, for benchmarks and tests. Reset clears it."""
        if not (_is_number(rtt_ms) and rtt_ms >= 0 and _is_number(jitter_ms) and jitter_ms >= 0):
            raise ValueError(f"rtt_ms and jitter_ms must be non-negative numbers, got {rtt_ms!r}, {jitter_ms!r}")
        self.rtt_ms, self.rtt_jitter_ms = float(rtt_ms), float(jitter_ms)

    def take_fault(self, is_write: bool) -> tuple[float, _Fault | None]:
        """(seconds of latency to add, the status/drop fault to answer with or None)."""
        delay = 0.0
        if self.rtt_ms or self.rtt_jitter_ms:
            delay = max(0.0, self.rtt_ms + random.uniform(-self.rtt_jitter_ms, self.rtt_jitter_ms)) / 1000.0
        if not self._faults:
            return delay, None
        now = time.monotonic()
        chosen: _Fault | None = None
        with self._meta_lock:
            for fault in self._faults:
                if fault.deadline is not None and now >= fault.deadline:
                    fault.remaining = 0
                if fault.remaining == 0 or chosen is not None or (fault.writes_only and not is_write):
                    continue
                delay += fault.latency_ms / 1000.0
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.status is not None or fault.drop:
                    chosen = fault
            self._faults = [f for f in self._faults if f.remaining != 0]
        return delay, chosen

    # -- writes -----------------------------------------------------------------------------

    def _index_for_write(self, name: str, undo: list) -> _Index:
        idx = self.indices.get(name)
        if idx is None:
            idx = self.indices[name] = _Index()
            undo.append((2, name, None))
        return idx

    def _rollback(self, undo: list) -> None:
        for entry in reversed(undo):
            kind = entry[0]
            if kind == 0:
                _, recs, oid, old = entry
                if old is _MISSING:
                    recs.pop(oid, None)
                else:
                    recs[oid] = old
            elif kind == 1:
                entry[1].records = entry[2]
            else:
                _, name, old_idx = entry
                if old_idx is None:
                    self.indices.pop(name, None)
                else:
                    self.indices[name] = old_idx

    def apply_batch(
        self, requests: Any, index_name: str | None = None, *, is_batch_endpoint: bool = True
    ) -> tuple[dict[str, int], list[str]]:
        """Apply batch requests atomically; returns ({index: taskID}, objectIDs).

        ``index_name`` is the index of ``/1/indexes/{i}/batch``; without it (``*/batch``) every
        request names its ``indexName``. Any invalid request rolls the whole batch back.
        """
        if not isinstance(requests, list):
            raise ApiError(400, "Invalid batch: 'requests' must be an array")
        limit = self.max_record_bytes
        dumps = orjson.dumps
        object_ids: list[str] = []
        append_oid = object_ids.append
        writes: dict[str, int] = {}  # index -> record-level actions (0 for index-level ones)
        undo: list[tuple] = []
        log_undo = undo.append
        ignored = 0
        with self._lock:
            if is_batch_endpoint:
                self._batch_requests += 1
            try:
                name: Any = None
                recs: Any = None  # records of `name`, fetched (and the index created) on first use
                run = 0  # record-level actions on `name` since it became the current index
                for pos, req in enumerate(requests):
                    if type(req) is not dict:
                        raise ApiError(400, f"Invalid request at the position {pos}: an object is expected")
                    action = req.get("action")
                    req_name = index_name if index_name is not None else req.get("indexName")
                    if req_name != name or recs is None:
                        if name is not None:
                            writes[name] = writes.get(name, 0) + run
                        if type(req_name) is not str or not req_name:
                            raise ApiError(400, f"Missing indexName at the position {pos}", position=pos)
                        name, run = req_name, 0
                        recs = None
                    if action == "clear" or action == "delete":
                        self._index_action(action, name, undo)
                        recs = None
                        continue
                    body = req.get("body")
                    if type(body) is not dict:
                        if action in _RECORD_ACTIONS:
                            raise ApiError(400, f"Missing body at the position {pos}", position=pos)
                        raise ApiError(400, f"Invalid action {action!r} at the position {pos}", position=pos)
                    if recs is None:
                        recs = self._index_for_write(name, undo).records
                    oid = body.get("objectID", _MISSING)
                    if action == "addObject" or action == "updateObject":
                        if type(oid) is not str or not oid:
                            if action == "addObject" and (oid is _MISSING or oid is None or oid == ""):
                                oid = body["objectID"] = uuid.uuid4().hex
                            else:
                                oid = _check_object_id(oid, action, pos)
                        size = len(dumps(body))
                        if size > limit:
                            raise _too_big(pos, oid, size, limit)
                        log_undo((0, recs, oid, recs.get(oid, _MISSING)))
                        recs[oid] = body
                    elif action == "partialUpdateObject" or action == "partialUpdateObjectNoCreate":
                        if type(oid) is not str or not oid:
                            oid = _check_object_id(oid, action, pos)
                        current = recs.get(oid)
                        new = None
                        if current is not None or action == "partialUpdateObject":
                            new = _partial_update(current, body, oid)
                        if new is None:
                            ignored += 1
                        else:
                            size = len(dumps(new))
                            if size > limit:
                                raise _too_big(pos, oid, size, limit)
                            log_undo((0, recs, oid, _MISSING if current is None else current))
                            recs[oid] = new
                    elif action == "deleteObject":
                        if type(oid) is not str or not oid:
                            oid = _check_object_id(oid, action, pos)
                        old = recs.pop(oid, _MISSING)
                        if old is not _MISSING:
                            log_undo((0, recs, oid, old))
                    else:
                        raise ApiError(400, f"Invalid action {action!r} at the position {pos}", position=pos)
                    append_oid(oid)
                    run += 1
                if name is not None:
                    writes[name] = writes.get(name, 0) + run
            except BaseException:
                self._rollback(undo)
                raise
            now = _now_iso()
            tasks: dict[str, int] = {}
            for name, n in writes.items():
                tasks[name] = next(self._tasks)
                idx = self.indices.get(name)
                if idx is not None:
                    idx.updated_at = now
                if n:
                    self._record_writes[name] = self._record_writes.get(name, 0) + n
            self._ignored_writes += ignored
        return tasks, object_ids

    def _index_action(self, action: str, name: str, undo: list) -> None:
        idx = self.indices.get(name)
        if action == "clear":
            if idx is not None:
                undo.append((1, idx, idx.records))
                idx.records = {}
        elif idx is not None:
            undo.append((2, name, idx))
            del self.indices[name]

    def new_task(self) -> int:
        return next(self._tasks)

    def clear(self, name: str) -> None:
        with self._lock:
            idx = self.indices.get(name)
            if idx is not None:
                idx.records = {}
                idx.updated_at = _now_iso()

    def delete_index(self, name: str) -> None:
        with self._lock:
            self.indices.pop(name, None)

    def set_settings(self, name: str, settings: dict) -> None:
        with self._lock:
            idx = self._index_for_write(name, [])
            idx.settings.update(deepcopy(settings))
            idx.updated_at = _now_iso()

    def get_settings(self, name: str) -> dict:
        with self._lock:
            idx = self.indices.get(name)
            if idx is None:
                raise ApiError(404, "Index does not exist")
            return deepcopy(idx.settings)

    def operation(self, source: str, operation: str, destination: str, scope: list[str] | None) -> None:
        """copy (optionally scoped) or move ``source`` to ``destination``, as documented by
        Algolia: copying a missing source yields an empty destination, moving one is ignored."""
        with self._lock:
            src = self.indices.get(source)
            if operation == "move":
                if src is not None:
                    src.updated_at = _now_iso()
                    self.indices[destination] = src
                    del self.indices[source]
                return
            if scope:
                dst = self._index_for_write(destination, [])
                if "settings" in scope:
                    dst.settings = deepcopy(src.settings) if src is not None else {}
                dst.updated_at = _now_iso()
                return
            dst = _Index()
            if src is not None:
                dst.records = dict(src.records)  # records are never mutated in place
                dst.settings = deepcopy(src.settings)
            self.indices[destination] = dst

    # -- reads ------------------------------------------------------------------------------

    def get_object(self, name: str, oid: str) -> dict | None:
        with self._lock:
            idx = self.indices.get(name)
            return idx.records.get(oid) if idx is not None else None

    def get_objects(self, wanted: list[tuple[str, str]]) -> list[dict | None]:
        with self._lock:
            out = []
            for name, oid in wanted:
                idx = self.indices.get(name)
                out.append(idx.records.get(oid) if idx is not None else None)
            return out

    def search(self, name: str, query: str, page: int, hits_per_page: int) -> tuple[list[dict], int]:
        """(hits of ``page``, total matches)."""
        with self._lock:
            idx = self.indices.get(name)
            if idx is None:
                raise ApiError(404, "Index does not exist")
            match = _matcher(query, idx.settings)
            if match is None:
                total = len(idx.records)
                hits = list(itertools.islice(idx.records.values(), page * hits_per_page, (page + 1) * hits_per_page))
                return hits, total
            found = [rec for rec in idx.records.values() if match(rec)]
        return found[page * hits_per_page : (page + 1) * hits_per_page], len(found)

    def browse(
        self, name: str, cursor: str | None, query: str, hits_per_page: int, attributes: list[str] | None
    ) -> dict[str, Any]:
        """One browse page. The first call snapshots the matching objectIDs; the cursor walks
        that snapshot (records deleted meanwhile are skipped, later ones are not returned)."""
        with self._lock:
            now = time.monotonic()
            while self._snapshots:
                oldest_key, oldest = next(iter(self._snapshots.items()))
                if now - oldest[0] < _BROWSE_TTL_S and len(self._snapshots) <= _BROWSE_SNAPSHOTS:
                    break
                self._snapshots.pop(oldest_key)
            if cursor:
                sid, offset = _decode_cursor(cursor)
                snap = self._snapshots.get(sid)
                if snap is None or snap[1] != name:
                    raise ApiError(400, "Cursor is not valid anymore")
                _, _, keys, attributes = snap
            else:
                idx = self.indices.get(name)
                if idx is None:
                    raise ApiError(404, "Index does not exist")
                match = _matcher(query, idx.settings)
                keys = list(idx.records) if match is None else [k for k, r in idx.records.items() if match(r)]
                sid, offset = uuid.uuid4().hex[:16], 0
                if len(keys) > hits_per_page:
                    self._snapshots[sid] = (now, name, keys, attributes)
            idx = self.indices.get(name)
            recs = idx.records if idx is not None else {}
            chunk = keys[offset : offset + hits_per_page]
            hits = [recs[k] for k in chunk if k in recs]
            next_offset = offset + hits_per_page
            more = next_offset < len(keys)
            if not more:
                self._snapshots.pop(sid, None)
        return {
            "hits": [_project(h, attributes) for h in hits] if attributes else hits,
            "nbHits": len(keys),
            "page": offset // hits_per_page,
            "nbPages": (len(keys) + hits_per_page - 1) // hits_per_page,
            "hitsPerPage": hits_per_page,
            "cursor": _encode_cursor(sid, next_offset) if more else None,
        }

    def list_indices(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {
                    "name": name,
                    "createdAt": idx.created_at,
                    "updatedAt": idx.updated_at,
                    "entries": len(idx.records),
                    "dataSize": 0,
                    "fileSize": 0,
                    "lastBuildTimeS": 0,
                    "numberOfPendingTasks": 0,
                    "pendingTask": False,
                }
                for name, idx in sorted(self.indices.items())
            ]


def _encode_cursor(sid: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{sid}:{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        sid, offset = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        return sid, int(offset)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Cursor is not valid") from None


_RECORD_ACTIONS = frozenset(
    {"addObject", "updateObject", "partialUpdateObject", "partialUpdateObjectNoCreate", "deleteObject"}
)


# --------------------------------------------------------------------------------------------
# Endpoints: f(state, path_args, query_params, raw_body) -> JSON-able response
# --------------------------------------------------------------------------------------------


class _Call(NamedTuple):
    state: EmulatorState
    args: tuple[str, ...]
    query: dict[str, str]
    raw: bytes

    def body(self) -> Any:
        return _loads(self.raw)


def _ep_multiple_batch(c: _Call) -> Any:
    body = c.body()
    tasks, oids = c.state.apply_batch(body.get("requests") if isinstance(body, dict) else None)
    return {"taskID": tasks, "objectIDs": oids}


def _ep_batch(c: _Call) -> Any:
    name = c.args[0]
    body = c.body()
    tasks, oids = c.state.apply_batch(body.get("requests") if isinstance(body, dict) else None, name)
    return {"taskID": tasks.get(name) or c.state.new_task(), "objectIDs": oids}


def _single_write(c: _Call, action: str, body: Any) -> tuple[int, str]:
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid record: a JSON object is expected")
    name = c.args[0]
    tasks, oids = c.state.apply_batch([{"action": action, "body": body}], name, is_batch_endpoint=False)
    return tasks[name], oids[0]


def _ep_save_object(c: _Call) -> Any:
    task, oid = _single_write(c, "addObject", c.body())
    return {"createdAt": _now_iso(), "taskID": task, "objectID": oid}


def _ep_put_object(c: _Call) -> Any:
    body = c.body()
    if isinstance(body, dict):
        body["objectID"] = c.args[1]
    task, oid = _single_write(c, "updateObject", body)
    return {"updatedAt": _now_iso(), "taskID": task, "objectID": oid}


def _ep_partial_object(c: _Call) -> Any:
    body = c.body()
    if isinstance(body, dict):
        body["objectID"] = c.args[1]
    create = c.query.get("createIfNotExists", "true").lower() != "false"
    task, oid = _single_write(c, "partialUpdateObject" if create else "partialUpdateObjectNoCreate", body)
    return {"updatedAt": _now_iso(), "taskID": task, "objectID": oid}


def _ep_delete_object(c: _Call) -> Any:
    task, _ = _single_write(c, "deleteObject", {"objectID": c.args[1]})
    return {"deletedAt": _now_iso(), "taskID": task}


def _ep_get_object(c: _Call) -> Any:
    rec = c.state.get_object(c.args[0], c.args[1])
    if rec is None:
        raise ApiError(404, "ObjectID does not exist")
    return _project(rec, _parse_attributes(c.query.get("attributesToRetrieve")))


def _ep_get_objects(c: _Call) -> Any:
    body = c.body()
    reqs = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(reqs, list):
        raise ApiError(400, "Invalid getObjects: 'requests' must be an array")
    wanted, attrs = [], []
    for pos, r in enumerate(reqs):
        if not isinstance(r, dict) or not isinstance(r.get("indexName"), str):
            raise ApiError(400, f"Missing indexName at the position {pos}")
        wanted.append((r["indexName"], _check_object_id(r.get("objectID", _MISSING), "getObjects", pos)))
        attrs.append(_parse_attributes(r.get("attributesToRetrieve")))
    found = c.state.get_objects(wanted)
    return {"results": [None if rec is None else _project(rec, a) for rec, a in zip(found, attrs)]}


def _search_response(
    name: str, params: dict, hits: list[dict], total: int, page: int, hpp: int, started: float
) -> dict[str, Any]:
    attrs = _parse_attributes(params.get("attributesToRetrieve"))
    return {
        "hits": [_project(h, attrs) for h in hits] if attrs else hits,
        "nbHits": total,
        "page": page,
        "nbPages": (total + hpp - 1) // hpp,
        "hitsPerPage": hpp,
        "exhaustiveNbHits": True,
        "processingTimeMS": int((time.perf_counter() - started) * 1000),
        "query": str(params.get("query") or ""),
        "params": "&".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, (dict, list))),
        "index": name,
    }


def _run_search(state: EmulatorState, name: str, params: dict) -> dict[str, Any]:
    started = time.perf_counter()
    page = _int_param(params, "page", 0, 0, 1_000_000)
    hpp = _int_param(params, "hitsPerPage", 20, 1, MAX_HITS_PER_PAGE)
    hits, total = state.search(name, str(params.get("query") or ""), page, hpp)
    return _search_response(name, params, hits, total, page, hpp, started)


def _ep_query(c: _Call) -> Any:
    return _run_search(c.state, c.args[0], _search_params(c.body()))


def _ep_queries(c: _Call) -> Any:
    body = c.body()
    reqs = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(reqs, list):
        raise ApiError(400, "Invalid search: 'requests' must be an array")
    results = []
    for req in reqs:
        params = _search_params(req)
        name = params.pop("indexName", None)
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Missing indexName in a search request")
        params.pop("type", None)
        results.append(_run_search(c.state, name, params))
    return {"results": results}


def _ep_browse(c: _Call) -> Any:
    started = time.perf_counter()
    params = _search_params(c.body())
    hpp = _int_param(params, "hitsPerPage", MAX_HITS_PER_PAGE, 1, MAX_HITS_PER_PAGE)
    cursor = params.get("cursor")
    page = c.state.browse(
        c.args[0],
        str(cursor) if cursor else None,
        str(params.get("query") or ""),
        hpp,
        _parse_attributes(params.get("attributesToRetrieve")),
    )
    if page["cursor"] is None:
        del page["cursor"]
    page.update(
        {
            "exhaustiveNbHits": True,
            "processingTimeMS": int((time.perf_counter() - started) * 1000),
            "query": str(params.get("query") or ""),
            "params": f"hitsPerPage={hpp}",
            "index": c.args[0],
        }
    )
    return page


def _ep_get_settings(c: _Call) -> Any:
    return c.state.get_settings(c.args[0])


def _ep_set_settings(c: _Call) -> Any:
    body = c.body()
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid settings: a JSON object is expected")
    c.state.set_settings(c.args[0], body)
    return {"taskID": c.state.new_task(), "updatedAt": _now_iso()}


def _ep_operation(c: _Call) -> Any:
    body = c.body()
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid operation: a JSON object is expected")
    operation, destination, scope = body.get("operation"), body.get("destination"), body.get("scope")
    if operation not in ("copy", "move"):
        raise ApiError(400, f"Invalid operation {operation!r}: expected copy or move")
    if not isinstance(destination, str) or not destination:
        raise ApiError(400, "Missing destination")
    if destination == c.args[0]:
        raise ApiError(400, "Source and destination indices must be different")
    if scope is not None:
        if not isinstance(scope, list) or any(s not in ("settings", "synonyms", "rules") for s in scope):
            raise ApiError(400, f"Invalid scope {scope!r}: expected a list of settings, synonyms, rules")
        if operation == "move":
            raise ApiError(400, "scope is only supported with the copy operation")
    c.state.operation(c.args[0], operation, destination, scope or None)
    return {"taskID": c.state.new_task(), "updatedAt": _now_iso()}


def _ep_clear(c: _Call) -> Any:
    c.state.clear(c.args[0])
    return {"taskID": c.state.new_task(), "updatedAt": _now_iso()}


def _ep_delete_index(c: _Call) -> Any:
    c.state.delete_index(c.args[0])
    return {"taskID": c.state.new_task(), "deletedAt": _now_iso()}


def _ep_list_indices(c: _Call) -> Any:
    items = c.state.list_indices()
    if "hitsPerPage" not in c.query:
        return {"items": items, "nbPages": 1}
    hpp = _int_param(c.query, "hitsPerPage", 100, 1, 1000)
    page = _int_param(c.query, "page", 0, 0, 1_000_000)
    return {"items": items[page * hpp : (page + 1) * hpp], "nbPages": max(1, (len(items) + hpp - 1) // hpp)}


def _ep_task(c: _Call) -> Any:
    return {"status": "published", "pendingTask": False}


class _Route(NamedTuple):
    method: str
    pattern: re.Pattern
    handler: Callable[[_Call], Any]
    write: bool


def _route(method: str, path: str, handler: Callable[[_Call], Any], write: bool) -> _Route:
    regex = re.escape(path).replace(r"\{\}", "([^/]+)")
    return _Route(method, re.compile(regex + r"\Z"), handler, write)


# Order matters: "*" routes and fixed suffixes come before the {index}/{objectID} catch-alls.
_ROUTES: list[_Route] = [
    _route("POST", "/1/indexes/*/batch", _ep_multiple_batch, True),
    _route("POST", "/1/indexes/*/objects", _ep_get_objects, False),
    _route("POST", "/1/indexes/*/queries", _ep_queries, False),
    _route("POST", "/1/indexes/{}/batch", _ep_batch, True),
    _route("POST", "/1/indexes/{}/browse", _ep_browse, False),
    _route("POST", "/1/indexes/{}/query", _ep_query, False),
    _route("POST", "/1/indexes/{}/clear", _ep_clear, True),
    _route("POST", "/1/indexes/{}/operation", _ep_operation, True),
    _route("GET", "/1/indexes/{}/settings", _ep_get_settings, False),
    _route("PUT", "/1/indexes/{}/settings", _ep_set_settings, True),
    _route("GET", "/1/indexes/{}/task/{}", _ep_task, False),
    _route("GET", "/1/task/{}", _ep_task, False),
    _route("GET", "/1/indexes", _ep_list_indices, False),
    _route("POST", "/1/indexes/{}", _ep_save_object, True),
    _route("DELETE", "/1/indexes/{}", _ep_delete_index, True),
    _route("POST", "/1/indexes/{}/{}/partial", _ep_partial_object, True),
    _route("GET", "/1/indexes/{}/{}", _ep_get_object, False),
    _route("PUT", "/1/indexes/{}/{}", _ep_put_object, True),
    _route("DELETE", "/1/indexes/{}/{}", _ep_delete_object, True),
]


def _match_route(method: str, path: str) -> tuple[_Route | None, tuple[str, ...]]:
    for route in _ROUTES:
        if route.method == method:
            m = route.pattern.match(path)
            if m is not None:
                return route, tuple(unquote(g) for g in m.groups())
    return None, ()


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks live connections so ``stop`` can close idle keep-alives."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        self.state = state
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN (a DNS lookup); it is never used.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes ``/1/`` to the Algolia endpoints and ``/_emulator/`` to the test hooks."""

    protocol_version = "HTTP/1.1"
    server_version = "AlgoliaEmulator/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        try:  # headers and body go out in one write, but never wait on Nagle
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(parts)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length > 0 else b""
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip" and data:
            data = gzip.decompress(data)
        return data

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        head = (
            f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\n"
            f"Content-Type: application/json; charset=UTF-8\r\nContent-Length: {len(payload)}\r\n"
        )
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + payload)
        if log.isEnabledFor(logging.DEBUG):
            self.log_request(status, len(payload))

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(obj), headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"message": message, "status": status}, headers)

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            raw = self._read_body()
        except Exception:  # bad Content-Length, broken chunking or gzip, client gone
            self.close_connection = True
            self._error(400, "Unreadable request body")
            return
        try:
            if path.startswith("/1/"):
                self._handle_api(path, query, raw)
            elif path.startswith("/_emulator/"):
                self._handle_control(path, raw)
            else:
                self._error(404, "Not Found")
        except ConnectionError:  # the client went away mid-response
            self.close_connection = True
        except Exception:
            log.exception("emulator: internal error on %s %s", self.command, self.path)
            self.close_connection = True
            self._error(500, "Internal emulator error")

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    # -- Algolia API ------------------------------------------------------------------------

    def _handle_api(self, path: str, query: str, raw: bytes) -> None:
        state = self.server.state
        state.count_request()
        route, args = _match_route(self.command, path)
        delay, fault = state.take_fault(route.write if route is not None else self.command != "GET")
        if delay:
            time.sleep(delay)
        if fault is not None:
            if fault.drop:
                state.count_rejected("dropped")
                self.close_connection = True  # no response at all: the socket just closes
                return
            state.count_rejected(fault.status)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            self._error(fault.status, f"{_PHRASES.get(fault.status, 'Error')} (emulator fault)", headers)
            return
        params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        headers = self.headers
        app_id = headers.get("x-algolia-application-id") or params.get("x-algolia-application-id")
        api_key = headers.get("x-algolia-api-key") or params.get("x-algolia-api-key")
        if app_id != state.app_id or api_key != state.api_key:
            state.count_rejected(403)
            self._error(403, "Invalid Application-ID or API key")
            return
        if route is None:
            state.count_rejected(404)
            self._error(404, "Not Found")
            return
        try:
            result = route.handler(_Call(state, args, params, raw))
        except ApiError as exc:
            state.count_rejected(exc.status)
            self._send_json(exc.status, exc.payload)
            return
        self._send_json(200, result)

    # -- test hooks -------------------------------------------------------------------------

    def _handle_control(self, path: str, raw: bytes) -> None:
        if self.client_address[0] not in _LOOPBACK:
            self._error(403, "The /_emulator/ endpoints only answer 127.0.0.1")
            return
        state = self.server.state
        method = self.command
        if path == "/_emulator/stats" and method == "GET":
            self._send_json(200, state.stats())
        elif path == "/_emulator/health" and method == "GET":
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/reset" and method == "POST":
            state.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/faults" and method == "GET":
            self._send_json(200, {"faults": state.faults()})
        elif path == "/_emulator/faults" and method == "DELETE":
            state.clear_faults()
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/faults" and method == "POST":
            try:
                body = _loads(raw)
                specs = body if isinstance(body, list) else [body]
                if not all(isinstance(spec, dict) for spec in specs):
                    raise ValueError("a fault is a JSON object")
                state.inject_faults(specs)
            except ApiError as exc:
                self._send_json(400, exc.payload)
                return
            except (TypeError, ValueError) as exc:
                self._error(400, f"Invalid fault: {exc}")
                return
            self._send_json(200, {"ok": True, "faults": state.faults()})
        elif path == "/_emulator/rtt" and method == "POST":
            try:
                body = _loads(raw)
                state.set_rtt(body.get("rtt_ms", 0), body.get("jitter_ms", 0))
            except (ApiError, AttributeError, TypeError, ValueError) as exc:
                self._error(400, f"Invalid round trip: {exc}")
                return
            self._send_json(200, {"ok": True, "rtt_ms": state.rtt_ms, "jitter_ms": state.rtt_jitter_ms})
        elif path.startswith("/_emulator/indexes/") and method == "GET":
            self._send(200, state.records_json(unquote(path[len("/_emulator/indexes/") :])))
        else:
            self._error(404, "Not Found")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


class Emulator:
    """An Algolia emulator serving HTTP from a daemon thread.

    >>> with Emulator() as emu:
    ...     client = make_client(emu.url, emu.app_id, emu.api_key)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        app_id: str = DEFAULT_APP_ID,
        api_key: str = DEFAULT_API_KEY,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.state = EmulatorState(app_id, api_key, max_record_bytes)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def app_id(self) -> str:
        return self.state.app_id

    @property
    def api_key(self) -> str:
        return self.state.api_key

    def start(self) -> Emulator:
        """Bind (OSError if the port is taken) and serve in a daemon thread; returns self."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.port), self.state)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="algolia-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idle keep-alives included)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL, with the real port once bound (e.g. ``http://127.0.0.1:54321``)."""
        if self._httpd is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def client(self) -> SearchClientSync:
        """A real algoliasearch client pointed at this emulator."""
        return make_client(self.url, self.app_id, self.api_key)

    def inject_fault(
        self,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        count: int | None = None,
        seconds: float | None = None,
        drop: bool = False,
        latency_ms: float | None = None,
        writes_only: bool = False,
    ) -> None:
        """See ``EmulatorState.inject_fault`` (same as ``POST /_emulator/faults``)."""
        self.state.inject_fault(
            status=status,
            retry_after=retry_after,
            count=count,
            seconds=seconds,
            drop=drop,
            latency_ms=latency_ms,
            writes_only=writes_only,
        )

    def clear_faults(self) -> None:
        """Remove every queued fault (``DELETE /_emulator/faults``)."""
        self.state.clear_faults()

    def set_rtt(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        """See ``EmulatorState.set_rtt`` (same as ``POST /_emulator/rtt``)."""
        self.state.set_rtt(rtt_ms, jitter_ms)

    def stats(self) -> dict[str, Any]:
        """Counters (``GET /_emulator/stats``)."""
        return self.state.stats()

    def reset(self) -> None:
        """Drop indices, counters and faults (``POST /_emulator/reset``)."""
        self.state.reset()

    def records(self, index: str) -> dict[str, dict]:
        """Copy of all records of ``index`` as {objectID: record} (``GET /_emulator/indexes/{i}``)."""
        return self.state.records(index)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def make_client(base_url: str, app_id: str, api_key: str) -> SearchClientSync:
    """The real algoliasearch v4 sync client, pointed at ``base_url`` (one host, no proxy).

    Proxies from the environment are dropped: the emulator is always reached directly.
    """
    from algoliasearch.http.hosts import Host, HostsCollection
    from algoliasearch.search.client import SearchClientSync
    from algoliasearch.search.config import SearchConfig

    cfg = SearchConfig(app_id, api_key)
    u = urlsplit(base_url)
    cfg.hosts = HostsCollection([Host(url=u.hostname or "127.0.0.1", scheme=u.scheme or "http", port=u.port)])
    cfg.proxies = {}
    return SearchClientSync.create_with_config(cfg)


def _log_line(message: str, **fields: Any) -> None:
    line = {"time": _now_iso(), "level": "info", "logger": log.name, "message": message, **fields}
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    sys.stdout.flush()


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback one ('' and 0.0.0.0 mean every interface: no)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None) if host else []
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def refuse_unsafe_bind(host: str, allow_remote: bool, api_key: str) -> str | None:
    """The one-line reason not to listen on `host`, or None.

    Anyone who can reach the emulator can read and write every index with its key, and the default
    key is published here: beyond loopback it needs both an explicit --allow-remote and a key of one's own.
    """
    if is_loopback(host):
        return None
    if not allow_remote:
        return (
            f"emulator: refusing to listen on {host!r}, which is not a loopback address; pass --allow-remote "
            "and an --api-key of your own to serve other hosts"
        )
    if api_key == DEFAULT_API_KEY:
        return (
            f"emulator: refusing to listen on {host!r} with the default API key, which anyone can read; "
            "pass --api-key with a key of your own"
        )
    return None


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"--port {raw!r} is not a port; expected a whole number from 0 to 65535")
    return value


def serve(
    port: int,
    host: str = "127.0.0.1",
    app_id: str = DEFAULT_APP_ID,
    api_key: str = DEFAULT_API_KEY,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> None:
    """Run the emulator until SIGTERM/SIGINT (then return normally, for exit code 0).

    Prints one JSON line with the URL once listening. A port already in use prints one line on
    stderr and raises ``SystemExit(2)``.
    """
    emu = Emulator(host=host, port=port, app_id=app_id, api_key=api_key, max_record_bytes=max_record_bytes)
    try:
        emu.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"emulator: cannot listen on {host}:{port}: {reason}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_PORT_IN_USE) from None
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    url = emu.url
    _log_line(
        "emulator listening", action="emulator_started", url=url, app_id=app_id, max_record_bytes=max_record_bytes
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _log_line("emulator stopped", action="emulator_stopped", url=url)


def main(argv: list[str] | None = None) -> int:
    """``python -m workerpool.emulator --port P [--host H --allow-remote --app-id X --api-key Y]``."""
    parser = argparse.ArgumentParser(
        prog="python -m workerpool.emulator", description="Serve an in-memory emulation of Algolia's Search REST API."
    )
    parser.add_argument("--port", type=_port, default=0, help="port to listen on (0: any free port; default 0)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need --allow-remote)"
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (also requires an --api-key other than the default)",
    )
    parser.add_argument("--app-id", default=DEFAULT_APP_ID, help=f"accepted application ID (default {DEFAULT_APP_ID})")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="accepted API key")
    parser.add_argument(
        "--max-record-bytes",
        type=int,
        default=DEFAULT_MAX_RECORD_BYTES,
        help=f"record size limit in bytes (default {DEFAULT_MAX_RECORD_BYTES})",
    )
    parser.add_argument("--debug", action="store_true", help="log every request on stderr")
    args = parser.parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    refusal = refuse_unsafe_bind(args.host, args.allow_remote, args.api_key)
    if refusal:
        print(refusal, file=sys.stderr)
        return EXIT_REFUSED
    serve(args.port, host=args.host, app_id=args.app_id, api_key=args.api_key, max_record_bytes=args.max_record_bytes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
