"""Asynchronous publishing: record writes that are acknowledged at once and readable only later.

Algolia answers a write with a ``taskID`` straight away and applies it in the background; reads see
it only once its task is ``published``, and the tasks of one index publish in order, so a queue
builds up under load. The emulator models that with a *publish delay* (off by default, when every
write is published at once and nothing here costs more than a log entry per task).

Writes still go to the live records at once (``EmulatorState.apply_batch``, with its atomic apply
and undo). Each unpublished task keeps the pre-images of the objectIDs it changed (the record, or
MISSING where there was none), and a read of an objectID that an unpublished task touched returns
the pre-image of the earliest such task: the state as of the last published task. A task is due at
``max(accepted + delay, due of the previous task of its index) + records * per_record``; due tasks
are published lazily, on the next read, task query or log.

Index-level changes stay immediate: clearing or deleting an index, or replacing it by a copy or a
move, publishes its pending tasks at once. A copy takes the source's live records (as if it had
waited for the source's pending writes); a move takes the source's pending tasks along.

Not thread-safe by itself: ``EmulatorState`` calls it under its own lock, which it is given so that
the methods for hooks and tests (``set_delay``, ``task_published``, ``task_log``) can take it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from workerpool.emulator.common import MISSING, Record, is_number

TASK_LOG_LIMIT = 100_000  # record-write tasks kept in the task log; the oldest go first
_FIELDS = ("task_id", "index", "records", "accepted_at", "published_at")


class _Task:
    """One record-write task on one index. ``pre``: {objectID: record before it, or MISSING}."""

    __slots__ = ("accepted_at", "accepted_mono", "due", "index", "pre", "published_at", "records", "task_id")

    def __init__(self, task_id: int, index: str, records: int, accepted_at: float, accepted_mono: float) -> None:
        self.task_id = task_id
        self.index = index
        self.records = records
        self.accepted_at = accepted_at
        self.accepted_mono = accepted_mono
        self.due = accepted_mono
        self.pre: dict[str, Any] = {}
        self.published_at: float | None = accepted_at

    def entry(self) -> dict[str, Any]:
        """The task as ``task_log`` lists it."""
        return {
            "task_id": self.task_id,
            "index": self.index,
            "records": self.records,
            "accepted_at": self.accepted_at,
            "published_at": self.published_at,
        }


class Publishing:
    """The publish delay, the queues of unpublished tasks per index, their pre-images, the task log."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.delay_ms = 0.0
        self.per_record_ms = 0.0
        self._queues: dict[str, deque[_Task]] = {}  # index -> unpublished tasks, oldest first
        # index -> {objectID: pre-images of the unpublished tasks that touched it, oldest first}
        self._overlay: dict[str, dict[str, list[Any]]] = {}
        self._pending: dict[int, _Task] = {}  # taskID -> unpublished task
        # A task published at once is logged as (taskID, index, records, accepted_at): cheaper than a _Task.
        self._log: deque[_Task | tuple[int, str, int, float]] = deque(maxlen=TASK_LOG_LIMIT)

    # -- for hooks and tests (take the state's lock) -------------------------------------------

    def set_delay(self, delay_ms: float, per_record_ms: float = 0.0) -> None:
        """Record writes accepted from now on publish ``delay_ms`` later, plus ``per_record_ms`` for
        each record of the task, and after the previous task of their index. 0 and 0: at once.
        ValueError unless both are finite non-negative numbers."""
        for name, value in (("delay_ms", delay_ms), ("per_record_ms", per_record_ms)):
            if not (is_number(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        with self._lock:
            self.delay_ms, self.per_record_ms = float(delay_ms), float(per_record_ms)

    def task_published(self, task_id: int) -> bool:
        """Whether a record-write task is published (True for any other task ID)."""
        with self._lock:
            self.publish_due()
            return task_id not in self._pending

    def task_log(self, index: str | None = None) -> list[dict[str, Any]]:
        """The last ``TASK_LOG_LIMIT`` record-write tasks, oldest first (of ``index`` only, if given):
        ``{"task_id", "index", "records", "accepted_at", "published_at"}``, times in Unix seconds,
        ``published_at`` None until published."""
        with self._lock:
            self.publish_due()
            out = []
            for t in self._log:
                if isinstance(t, _Task):
                    if index is None or t.index == index:
                        out.append(t.entry())
                elif index is None or t[1] == index:
                    out.append(dict(zip(_FIELDS, (*t, t[3]), strict=True)))
            return out

    # -- for EmulatorState, under its lock -----------------------------------------------------

    def accept(
        self, tasks: dict[str, int], writes: dict[str, int], undo: list[tuple[Any, ...]], indices: Mapping[str, Any]
    ) -> None:
        """Log the tasks of an applied batch ({index: taskID}, {index: record actions}) and hold the
        ones not due yet, with pre-images read off the batch's undo log (see ``EmulatorState._rollback``)."""
        now_wall = time.time()
        if not (self.delay_ms or self.per_record_ms or self._queues):  # published at once: just log
            for name, task_id in tasks.items():
                self._log.append((task_id, name, writes.get(name, 0), now_wall))
            return
        now = time.monotonic()
        pre = self._pre_images(undo, indices)
        delay, per_record = self.delay_ms / 1000.0, self.per_record_ms / 1000.0
        for name, task_id in tasks.items():
            task = _Task(task_id, name, writes.get(name, 0), now_wall, now)
            self._log.append(task)
            queue = self._queues.get(name)
            start = max(now + delay, queue[-1].due) if queue else now + delay
            task.due = start + task.records * per_record
            if task.due <= now:
                continue
            task.published_at = None
            task.pre = pre.get(name, {})
            overlay = self._overlay.setdefault(name, {})
            for oid, old in task.pre.items():
                overlay.setdefault(oid, []).append(old)
            if queue is None:
                queue = self._queues[name] = deque()
            queue.append(task)
            self._pending[task_id] = task

    def _pre_images(self, undo: list[tuple[Any, ...]], indices: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """{index: {objectID: value before the batch}} from its undo log; a clear or delete of an
        index in the batch publishes that index's pending tasks and forgets what came before it."""
        by_records = {id(idx.records): name for name, idx in indices.items()}
        by_index = {id(idx): name for name, idx in indices.items()}
        pre: dict[str, dict[str, Any]] = {}
        for entry in undo:
            kind = entry[0]
            if kind == 0:  # (0, records, objectID, old record or MISSING)
                name = by_records.get(id(entry[1]))
                if name is not None:  # else records replaced later in the batch, by a clear or delete
                    pre.setdefault(name, {}).setdefault(entry[2], entry[3])
                continue
            name = by_index.get(id(entry[1])) if kind == 1 else (entry[1] if entry[2] is not None else None)
            if name is not None:  # a clear (1, index, records) or a delete (2, name, old index)
                self.discard(name)
                pre.pop(name, None)
        return pre

    def publish_due(self) -> None:
        """Publish every task whose time has come, oldest first on each index."""
        if not self._queues:
            return
        now = time.monotonic()
        for name in list(self._queues):
            queue = self._queues[name]
            while queue and queue[0].due <= now:
                self._publish(name, queue.popleft(), None)
            if not queue:
                del self._queues[name]

    def _publish(self, name: str, task: _Task, at: float | None) -> None:
        overlay = self._overlay.get(name, {})
        for oid in task.pre:
            images = overlay[oid]
            del images[0]
            if not images:
                del overlay[oid]
        if not overlay:
            self._overlay.pop(name, None)
        task.pre = {}
        due_at = task.accepted_at + (task.due - task.accepted_mono)
        task.published_at = due_at if at is None else min(at, due_at)
        del self._pending[task.task_id]

    def discard(self, name: str) -> None:
        """Publish every pending task of ``name`` now: the index is cleared, deleted or replaced."""
        queue = self._queues.pop(name, None)
        now_wall = time.time()
        while queue:
            self._publish(name, queue.popleft(), now_wall)
        self._overlay.pop(name, None)

    def rename(self, source: str, destination: str) -> None:
        """``source`` moved onto ``destination``: its pending tasks and pre-images go with it."""
        self.discard(destination)
        queue = self._queues.pop(source, None)
        if queue is not None:
            self._queues[destination] = queue
        overlay = self._overlay.pop(source, None)
        if overlay is not None:
            self._overlay[destination] = overlay

    def pending(self, name: str) -> int:
        """How many tasks of ``name`` are not published."""
        queue = self._queues.get(name)
        return len(queue) if queue else 0

    def view(self, name: str, records: dict[str, Record]) -> dict[str, Record]:
        """The published records of ``name`` given its live ``records``: ``records`` itself when
        nothing is pending, else a new dict."""
        if not self._queues:
            return records
        self.publish_due()
        overlay = self._overlay.get(name)
        if not overlay:
            return records
        out = dict(records)
        for oid, images in overlay.items():
            if images[0] is MISSING:
                out.pop(oid, None)
            else:
                out[oid] = images[0]
        return out

    def get(self, name: str, records: dict[str, Record], oid: str) -> Record | None:
        """The published record ``oid`` of ``name`` given its live ``records``, or None."""
        if not self._queues:  # nothing pending anywhere: the live record (the cost of a read without delay)
            return records.get(oid)
        self.publish_due()
        overlay = self._overlay.get(name)
        images = overlay.get(oid) if overlay else None
        if images is None:
            return records.get(oid)
        return None if images[0] is MISSING else images[0]

    def pick(self, name: str, records: dict[str, Record], keys: list[str]) -> list[Record]:
        """The published records of ``keys`` that exist, in order, given the live ``records`` of ``name``
        (a browse page: no copy of the whole index)."""
        if not self._queues:
            return [records[k] for k in keys if k in records]
        self.publish_due()
        overlay = self._overlay.get(name, {})
        out = []
        for k in keys:
            images = overlay.get(k)
            rec = records.get(k, MISSING) if images is None else images[0]
            if rec is not MISSING:
                out.append(rec)
        return out

    def count(self, name: str, records: dict[str, Record]) -> int:
        """How many published records ``name`` has, given its live ``records``."""
        self.publish_due()
        total = len(records)
        for oid, images in self._overlay.get(name, {}).items():
            total += (images[0] is not MISSING) - (oid in records)
        return total
