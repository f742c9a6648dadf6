"""Whether a worker process got into service, and whether its loop still turns: a few shared bytes
per worker, written by the worker, read by the supervisor.

The supervisor counts toward `RESTART_LIMIT` only workers that die before settling their first batch
(gunicorn halts on boot errors, not on workers killed in service). It creates a `Slot` before each
fork; the child keeps it as its own (`adopt`), calls `mark_in_service()` once it has settled a
batch, and `beat()` from its claim loop (never from a side thread): the supervisor kills a worker
whose last beat is older than WORKER_TIMEOUT, as gunicorn's arbiter does. The bytes live in an
anonymous shared mapping, so no file, pipe or database round trip is involved, and a beat costs a
clock read and a memory write.
"""

from __future__ import annotations

import mmap
import struct
import time

_BEAT = struct.Struct("d")  # time.monotonic() of the last beat (CLOCK_MONOTONIC: one clock for every process)


class Slot:
    """One worker's in-service flag and heartbeat, shared between the supervisor and that worker after fork."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 1 + _BEAT.size, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.beat()

    def mark(self) -> None:
        if not self._map.closed:
            self._map[0] = 1

    @property
    def marked(self) -> bool:
        return not self._map.closed and self._map[0] == 1

    def beat(self) -> None:
        if not self._map.closed:
            _BEAT.pack_into(self._map, 1, time.monotonic())

    @property
    def silent_for(self) -> float:
        """Seconds since the worker's last beat (0 once the slot is closed)."""
        return 0.0 if self._map.closed else max(0.0, time.monotonic() - _BEAT.unpack_from(self._map, 1)[0])

    def close(self) -> None:
        self._map.close()


_own: Slot | None = None


def adopt(slot: Slot) -> None:
    """In a freshly forked worker: this is the slot its supervisor reads."""
    global _own
    _own = slot


def mark_in_service() -> None:
    """Called by the worker after it settles a batch; idempotent, and a no-op outside a supervisor."""
    if _own is not None:
        _own.mark()


def beat() -> None:
    """Called by the worker's claim loop whenever it turns, and while it waits; a no-op outside a supervisor."""
    if _own is not None:
        _own.beat()
