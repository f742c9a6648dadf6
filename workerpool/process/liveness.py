"""Whether a worker process got into service: one shared byte per worker, set by the worker.

The supervisor counts toward `RESTART_LIMIT` only workers that die before settling their first batch
(gunicorn halts on boot errors, not on workers killed in service). It creates a `Slot` before each
fork; the child keeps it as its own (`adopt`) and calls `mark_in_service()` once it has settled a
batch; the supervisor reads the slot when it reaps the child. The byte lives in an anonymous shared
mapping, so no file, pipe or database round trip is involved, and marking costs one memory write.
"""

from __future__ import annotations

import mmap


class Slot:
    """One worker's in-service flag, shared between the supervisor and that worker after fork."""

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, 1, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)

    def mark(self) -> None:
        if not self._map.closed:
            self._map[0] = 1

    @property
    def marked(self) -> bool:
        return not self._map.closed and self._map[0] == 1

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
