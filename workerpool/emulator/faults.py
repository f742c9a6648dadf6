"""Fault injection for ``/1/`` requests: HTTP errors, dropped connections, added latency, answers
that are not Algolia's (a proxy's 200 page), answers that trickle a byte at a time or are huge, and a
round trip (± jitter) that every answer waits, as from a far Algolia region."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from workerpool.emulator.common import is_number


class Fault:
    """One queued fault; ``remaining``/``deadline`` of None mean unlimited."""

    __slots__ = (
        "answer",
        "deadline",
        "drop",
        "huge_bytes",
        "latency_ms",
        "remaining",
        "retry_after",
        "status",
        "trickle_bytes",
        "trickle_interval_ms",
        "writes_only",
    )

    def __init__(
        self,
        status: int | None,
        retry_after: int | None,
        drop: bool,
        latency_ms: float,
        remaining: int | None,
        deadline: float | None,
        writes_only: bool,
        answer: str | None = None,
        trickle_bytes: int = 0,
        trickle_interval_ms: float = 0.0,
        huge_bytes: int = 0,
    ) -> None:
        self.status = status
        self.retry_after = retry_after
        self.drop = drop
        self.latency_ms = latency_ms
        self.remaining = remaining
        self.deadline = deadline
        self.writes_only = writes_only
        self.answer = answer
        self.trickle_bytes = trickle_bytes
        self.trickle_interval_ms = trickle_interval_ms
        self.huge_bytes = huge_bytes

    @property
    def answers(self) -> bool:
        """Whether this fault answers the request itself (rather than only delaying it)."""
        return (
            self.status is not None
            or self.drop
            or self.answer is not None
            or bool(self.trickle_bytes or self.huge_bytes)
        )

    def describe(self) -> dict[str, Any]:
        """The fault as ``GET /_emulator/faults`` lists it (what is left of its count and seconds)."""
        out: dict[str, Any] = {"writes_only": self.writes_only}
        if self.status is not None:
            out["status"] = self.status
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.drop:
            out["drop"] = True
        if self.latency_ms:
            out["latency_ms"] = self.latency_ms
        if self.answer is not None:
            out["answer"] = self.answer
        if self.trickle_bytes:
            out.update(trickle_bytes=self.trickle_bytes, trickle_interval_ms=self.trickle_interval_ms)
        if self.huge_bytes:
            out["huge_bytes"] = self.huge_bytes
        if self.remaining is not None:
            out["count"] = self.remaining
        if self.deadline is not None:
            out["seconds"] = round(max(0.0, self.deadline - time.monotonic()), 3)
        return out


def build_fault(
    *,
    status: int | None = None,
    retry_after: int | None = None,
    count: int | None = None,
    seconds: float | None = None,
    drop: bool = False,
    latency_ms: float | None = None,
    writes_only: bool = False,
    answer: str | None = None,
    trickle_bytes: int | None = None,
    trickle_interval_ms: float | None = None,
    huge_bytes: int | None = None,
) -> Fault:
    """A validated fault (see ``EmulatorState.inject_fault``); ValueError if it makes no sense.

    Besides a status, a drop or latency: `answer` answers 200 with that text (a proxy's page, a wrong
    host); `trickle_bytes` answers 200 with that many bytes, one every `trickle_interval_ms`;
    `huge_bytes` answers 200 with a body of that many bytes.
    """
    kinds = [status is not None, bool(drop), answer is not None, bool(trickle_bytes), bool(huge_bytes)]
    if not any(kinds) and not latency_ms:
        raise ValueError("a fault needs one of: status, drop, latency_ms, answer, trickle_bytes, huge_bytes")
    if sum(kinds) > 1:
        raise ValueError("a fault answers one way: status, drop, answer, trickle_bytes or huge_bytes")
    for name, value in (("trickle_bytes", trickle_bytes), ("huge_bytes", huge_bytes)):
        if value is not None and (type(value) is not int or value < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if trickle_interval_ms is not None and not (is_number(trickle_interval_ms) and trickle_interval_ms >= 0):
        raise ValueError(f"trickle_interval_ms must be a non-negative number, got {trickle_interval_ms!r}")
    if answer is not None and not isinstance(answer, str):
        raise ValueError(f"answer must be a string, got {answer!r}")
    if status is not None and not (type(status) is int and 400 <= status <= 599):
        raise ValueError(f"status must be an HTTP error code (400-599), got {status!r}")
    if count is not None and (type(count) is not int or count < 1):
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if seconds is not None and not (is_number(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    if latency_ms is not None and not (is_number(latency_ms) and latency_ms >= 0):
        raise ValueError(f"latency_ms must be a non-negative number, got {latency_ms!r}")
    if status == 429 and retry_after is None:
        retry_after = 1
    return Fault(
        status,
        retry_after,
        bool(drop),
        float(latency_ms or 0),
        count,
        None if seconds is None else time.monotonic() + seconds,
        bool(writes_only),
        answer,
        trickle_bytes or 0,
        float(trickle_interval_ms or 0),
        huge_bytes or 0,
    )


class Faults:
    """The queued faults and the round trip of one emulator. Thread-safe: checked on every request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self.rtt_ms = 0.0
        self.rtt_jitter_ms = 0.0
        self.task_delay_s = 0.0
        self._unpublished: dict[int, float] = {}  # taskID -> when it publishes

    def reset(self) -> None:
        """No fault, no round trip, tasks published at once."""
        with self._lock:
            self._queue = []
            self.rtt_ms = self.rtt_jitter_ms = 0.0
            self.task_delay_s = 0.0
            self._unpublished.clear()

    def set_task_delay(self, seconds: float) -> None:
        """Tasks created from now on stay `notPublished` for `seconds` (a large index's copy or move)."""
        if not (is_number(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be a non-negative number, got {seconds!r}")
        self.task_delay_s = float(seconds)

    def hold_task(self, task: int) -> None:
        """A new task: unpublished for the task delay, if one is set."""
        if self.task_delay_s:
            with self._lock:
                self._unpublished[task] = time.monotonic() + self.task_delay_s

    def task_published(self, task: int) -> bool:
        with self._lock:
            due = self._unpublished.get(task)
            if due is not None and time.monotonic() >= due:
                del self._unpublished[task]
                due = None
        return due is None

    def add(self, specs: list[dict[str, Any]]) -> None:
        """Queue faults given as keyword dicts of ``build_fault``: all of them or, if one is invalid
        (ValueError/TypeError), none."""
        faults = [build_fault(**spec) for spec in specs]
        with self._lock:
            self._queue.extend(faults)

    def clear(self) -> None:
        """Remove every queued fault (the round trip stays)."""
        with self._lock:
            self._queue.clear()

    def describe(self) -> list[dict[str, Any]]:
        """Every queued fault, as ``GET /_emulator/faults`` lists them."""
        with self._lock:
            return [f.describe() for f in self._queue]

    def pending(self) -> int:
        """How many faults are queued."""
        with self._lock:
            return len(self._queue)

    def set_rtt(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        """Hold every `/1/` answer for a round trip of `rtt_ms`, ± up to `jitter_ms` (uniform)."""
        if not (is_number(rtt_ms) and rtt_ms >= 0 and is_number(jitter_ms) and jitter_ms >= 0):
            raise ValueError(f"rtt_ms and jitter_ms must be non-negative numbers, got {rtt_ms!r}, {jitter_ms!r}")
        self.rtt_ms, self.rtt_jitter_ms = float(rtt_ms), float(jitter_ms)

    def take(self, is_write: bool) -> tuple[float, Fault | None]:
        """(seconds of latency to add, the status/drop fault to answer with or None) for one request.

        The first live fault that applies (``writes_only`` ones skip reads) answers the request;
        every applicable latency before it adds up. Counts are spent, expired faults removed.
        """
        delay = 0.0
        if self.rtt_ms or self.rtt_jitter_ms:
            delay = max(0.0, self.rtt_ms + random.uniform(-self.rtt_jitter_ms, self.rtt_jitter_ms)) / 1000.0
        if not self._queue:
            return delay, None
        now = time.monotonic()
        chosen: Fault | None = None
        with self._lock:
            for fault in self._queue:
                if fault.deadline is not None and now >= fault.deadline:
                    fault.remaining = 0
                if fault.remaining == 0 or chosen is not None or (fault.writes_only and not is_write):
                    continue
                delay += fault.latency_ms / 1000.0
                if fault.remaining is not None:
                    fault.remaining -= 1
                if fault.answers:
                    chosen = fault
            self._queue = [f for f in self._queue if f.remaining != 0]
        return delay, chosen
