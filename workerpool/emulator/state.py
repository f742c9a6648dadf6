"""The in-memory store: indices of records and settings, tasks, browse cursors and counters.

State lives behind a single lock. Stored records are never mutated in place (partial updates
copy the record), so readers can serialize them outside the lock. Reads see published ones only.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from copy import deepcopy
from typing import Any

import orjson

from workerpool.emulator.common import MISSING, ApiError, Record, now_iso
from workerpool.emulator.cursors import Cursors, Snapshot
from workerpool.emulator.faults import Faults
from workerpool.emulator.index import Index as _Index
from workerpool.emulator.index import copyable as _copyable
from workerpool.emulator.publishing import Publishing
from workerpool.emulator.recorder import Recorder
from workerpool.emulator.records import RECORD_ACTIONS, check_object_id, matcher, partial_update, project, too_big


class EmulatorState:
    """All indices, counters, queued faults and the round trip of one emulator. Thread-safe.

    ``_lock`` guards indices, browse cursors and write counters; ``_meta_lock`` guards the
    request/rejection counters, counted on every request before routing; ``fault_queue`` (the
    faults and the round trip) has its own.
    """

    def __init__(self, app_id: str, api_key: str, max_record_bytes: int) -> None:
        self.app_id = app_id
        self.api_key = api_key
        self.max_record_bytes = max_record_bytes
        self.fault_queue = Faults()
        self._lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._tasks = itertools.count(1)
        self._reset_unlocked()

    def _reset_unlocked(self) -> None:
        self.indices: dict[str, _Index] = {}
        self.publishing = Publishing(self._lock)  # a fresh one: no publish delay, no task log
        self._cursors = Cursors()
        self._record_writes: dict[str, int] = {}
        self._batch_requests = 0
        self._ignored_writes = 0
        self._requests = 0
        self._rejected: dict[str, int] = {"429": 0, "5xx": 0, "dropped": 0, "400": 0, "403": 0, "404": 0}
        self.recorder = Recorder()  # the /1/ requests received, once started (off after a reset)

    # -- test hooks -------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop every index, counter, fault and task, the round trip and the publish delay."""
        with self._lock, self._meta_lock:
            self._reset_unlocked()
            self.fault_queue.reset()

    def stats(self) -> dict[str, Any]:
        """Counters since start/reset (see the package docs of ``/_emulator/stats``)."""
        with self._lock:
            writes = dict(self._record_writes)
            batches = self._batch_requests
            ignored = self._ignored_writes
            entries = {name: self.publishing.count(name, idx.records) for name, idx in self.indices.items()}
        with self._meta_lock:
            return {
                "requests": self._requests,
                "batch_requests": batches,
                "record_writes": writes,
                "record_writes_total": sum(writes.values()),
                "ignored_writes": ignored,
                "rejected": dict(self._rejected),
                "faults_pending": self.fault_queue.pending(),
                "indices": entries,
            }

    def records(self, index: str) -> dict[str, Record]:
        """A copy of every published record of ``index`` as {objectID: record} ({} if no such index)."""
        copy: dict[str, Record] = orjson.loads(self.records_json(index))  # much faster than deepcopy
        return copy

    def records_json(self, index: str) -> bytes:
        """Every published record of ``index`` as the JSON object {objectID: record}."""
        with self._lock:
            idx = self.indices.get(index)
            snapshot = dict(self.publishing.view(index, idx.records)) if idx is not None else {}
        return orjson.dumps(snapshot)

    def inject_faults(self, specs: list[dict[str, Any]]) -> None:
        """Queue faults given as keyword dicts of ``faults.build_fault``: all of them or, if one is
        invalid (ValueError/TypeError), none. See ``Emulator.inject_fault`` for what they do."""
        self.fault_queue.add(specs)

    # -- per-request bookkeeping ------------------------------------------------------------

    def count_request(self) -> None:
        with self._meta_lock:
            self._requests += 1

    def count_rejected(self, status: int | str) -> None:
        key = status if isinstance(status, str) else ("5xx" if 500 <= status <= 599 else str(status))
        with self._meta_lock:
            self._rejected[key] = self._rejected.get(key, 0) + 1

    # -- writes -----------------------------------------------------------------------------

    def _index_for_write(self, name: str, undo: list[tuple[Any, ...]]) -> _Index:
        idx = self.indices.get(name)
        if idx is None:
            idx = self.indices[name] = _Index()
            undo.append((2, name, None))
        return idx

    def _rollback(self, undo: list[tuple[Any, ...]]) -> None:
        # Entries: (0, records, objectID, old record or MISSING), (1, index, old records),
        # (2, index name, old index or None).
        for entry in reversed(undo):
            kind = entry[0]
            if kind == 0:
                _, recs, oid, old = entry
                if old is MISSING:
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
        undo: list[tuple[Any, ...]] = []
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
                        if action in RECORD_ACTIONS:
                            raise ApiError(400, f"Missing body at the position {pos}", position=pos)
                        raise ApiError(400, f"Invalid action {action!r} at the position {pos}", position=pos)
                    if recs is None:
                        recs = self._index_for_write(name, undo).records
                    oid = body.get("objectID", MISSING)
                    if action == "addObject" or action == "updateObject":
                        if type(oid) is not str or not oid:
                            if action == "addObject" and (oid is MISSING or oid is None or oid == ""):
                                oid = body["objectID"] = uuid.uuid4().hex
                            else:
                                oid = check_object_id(oid, action, pos)
                        size = len(dumps(body))
                        if size > limit:
                            raise too_big(pos, oid, size, limit)
                        log_undo((0, recs, oid, recs.get(oid, MISSING)))
                        recs[oid] = body
                    elif action == "partialUpdateObject" or action == "partialUpdateObjectNoCreate":
                        if type(oid) is not str or not oid:
                            oid = check_object_id(oid, action, pos)
                        current = recs.get(oid)
                        new = None
                        if current is not None or action == "partialUpdateObject":
                            new = partial_update(current, body, oid)
                        if new is None:
                            ignored += 1
                        else:
                            size = len(dumps(new))
                            if size > limit:
                                raise too_big(pos, oid, size, limit)
                            log_undo((0, recs, oid, MISSING if current is None else current))
                            recs[oid] = new
                    elif action == "deleteObject":
                        if type(oid) is not str or not oid:
                            oid = check_object_id(oid, action, pos)
                        old = recs.pop(oid, MISSING)
                        if old is not MISSING:
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
            now = now_iso()
            tasks: dict[str, int] = {}
            for name, n in writes.items():
                tasks[name] = next(self._tasks)
                idx = self.indices.get(name)
                if idx is not None:
                    idx.updated_at = now
                if n:
                    self._record_writes[name] = self._record_writes.get(name, 0) + n
            self._ignored_writes += ignored
            self.publishing.accept(tasks, writes, undo, self.indices)
        return tasks, object_ids

    def _index_action(self, action: str, name: str, undo: list[tuple[Any, ...]]) -> None:
        idx = self.indices.get(name)
        if action == "clear":
            if idx is not None:
                undo.append((1, idx, idx.records))
                idx.records = {}
        elif idx is not None:
            undo.append((2, name, idx))
            del self.indices[name]

    def new_task(self) -> int:
        """A fresh taskID; published at once, or after the fault queue's task delay."""
        task = next(self._tasks)
        self.fault_queue.hold_task(task)
        return task

    def clear(self, name: str) -> None:
        """Remove every record of ``name``, keeping its settings. Clear and delete are immediate: the
        index's pending tasks publish at once."""
        with self._lock:
            self.publishing.discard(name)
            idx = self.indices.get(name)
            if idx is not None:
                idx.records = {}
                idx.updated_at = now_iso()

    def delete_index(self, name: str) -> None:
        with self._lock:
            self.publishing.discard(name)
            self.indices.pop(name, None)

    def set_settings(self, name: str, settings: Record) -> None:
        """Merge ``settings`` into the index's (created if missing, and so are the replicas it names)."""
        with self._lock:
            idx = self._index_for_write(name, [])
            idx.settings.update(deepcopy(settings))
            for replica in settings.get("replicas") or ():
                self._index_for_write(str(replica).removeprefix("virtual(").removesuffix(")"), [])
            idx.updated_at = now_iso()

    def get_settings(self, name: str) -> Record:
        with self._lock:
            idx = self.indices.get(name)
            if idx is None:
                raise ApiError(404, "Index does not exist")
            return deepcopy(idx.settings)

    def operation(self, source: str, operation: str, destination: str, scope: list[str] | None) -> None:
        """copy (optionally scoped) or move ``source`` to ``destination``, as documented by
        Algolia: copying a missing source yields an empty destination, moving one is ignored; a copy
        never carries NOT_COPIED settings and may not overwrite an index that has replicas."""
        with self._lock:
            src = self.indices.get(source)
            if operation == "copy" and (self.indices[destination].settings if destination in self.indices else {}).get(
                "replicas"
            ):
                raise ApiError(400, f"Cannot copy to {destination}: the destination index has replicas")
            if operation == "move":
                if src is not None:
                    self.publishing.rename(source, destination)
                    src.updated_at = now_iso()
                    self.indices[destination] = src
                    del self.indices[source]
                return
            if scope:
                dst = self._index_for_write(destination, [])
                if "settings" in scope:
                    dst.settings = _copyable(src.settings) if src is not None else {}
                dst.updated_at = now_iso()
                return
            self.publishing.discard(destination)
            dst = _Index()
            if src is not None:
                dst.records = dict(src.records)  # records are never mutated in place
                dst.settings = _copyable(src.settings)
            self.indices[destination] = dst

    # -- reads ------------------------------------------------------------------------------

    def get_object(self, name: str, oid: str) -> Record | None:
        with self._lock:
            idx = self.indices.get(name)
            return self.publishing.get(name, idx.records, oid) if idx is not None else None

    def get_objects(self, wanted: list[tuple[str, str]]) -> list[Record | None]:
        """The record of each (index, objectID), None where there is none."""
        with self._lock:
            out = []
            for name, oid in wanted:
                idx = self.indices.get(name)
                out.append(self.publishing.get(name, idx.records, oid) if idx is not None else None)
            return out

    def search(self, name: str, query: str, page: int, hits_per_page: int) -> tuple[list[Record], int]:
        """(hits of ``page``, total matches)."""
        with self._lock:
            idx = self.indices.get(name)
            if idx is None:
                raise ApiError(404, "Index does not exist")
            match, recs = matcher(query, idx.settings), self.publishing.view(name, idx.records)
            if match is None:
                hits = list(itertools.islice(recs.values(), page * hits_per_page, (page + 1) * hits_per_page))
                return hits, len(recs)
            found = [rec for rec in recs.values() if match(rec)]
        return found[page * hits_per_page : (page + 1) * hits_per_page], len(found)

    def browse(
        self, name: str, cursor: str | None, query: str, hits_per_page: int, attributes: list[str] | None
    ) -> dict[str, Any]:
        """One browse page. The first call snapshots the matching objectIDs; the cursor walks
        that snapshot (records deleted meanwhile are skipped, later ones are not returned)."""
        with self._lock:
            idx = self.indices.get(name)
            recs = idx.records if idx is not None else {}
            if cursor:
                snap, offset = self._cursors.resume(cursor, name)
            else:
                if idx is None:
                    raise ApiError(404, "Index does not exist")
                match, view = matcher(query, idx.settings), self.publishing.view(name, recs)
                keys = list(view) if match is None else [k for k, r in view.items() if match(r)]
                snap, offset = Snapshot(name, keys, attributes), 0
                if len(keys) > hits_per_page:
                    self._cursors.open(snap)
            hits = self.publishing.pick(name, recs, snap.keys[offset : offset + hits_per_page])
            next_offset = offset + hits_per_page
            more = next_offset < len(snap.keys)
            if not more:
                self._cursors.close(snap)
        attributes = snap.attributes
        return {
            "hits": [project(h, attributes) for h in hits] if attributes else hits,
            "nbHits": len(snap.keys),
            "page": offset // hits_per_page,
            "nbPages": (len(snap.keys) + hits_per_page - 1) // hits_per_page,
            "hitsPerPage": hits_per_page,
            "cursor": self._cursors.cursor(snap, next_offset) if more else None,
        }

    def list_indices(self) -> list[dict[str, Any]]:
        """Every index, by name, as ``GET /1/indexes`` lists them."""
        with self._lock:
            return [
                {
                    "name": name,
                    "createdAt": idx.created_at,
                    "updatedAt": idx.updated_at,
                    "entries": self.publishing.count(name, idx.records),
                    "dataSize": 0,
                    "fileSize": 0,
                    "lastBuildTimeS": 0,
                    "numberOfPendingTasks": self.publishing.pending(name),
                    "pendingTask": self.publishing.pending(name) > 0,
                }
                for name, idx in sorted(self.indices.items())
            ]
