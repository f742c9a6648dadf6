"""Browse cursors: the objectIDs a first browse call matched, walked page by page by the calls that
follow, as Algolia's browse does. A bounded number are kept, each for a limited time."""

from __future__ import annotations

import base64
import time
import uuid
from collections import OrderedDict

from workerpool.emulator.common import ApiError

BROWSE_SNAPSHOTS = 64  # open browse cursors kept; the oldest is dropped beyond this
BROWSE_TTL_S = 600.0


class Snapshot:
    """One browse's matching objectIDs and the attributes it asked for."""

    def __init__(self, index: str, keys: list[str], attributes: list[str] | None) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.index = index
        self.keys = keys
        self.attributes = attributes
        self.taken_at = time.monotonic()


class Cursors:
    """The open snapshots (not thread-safe: the emulator's state lock guards them)."""

    def __init__(self) -> None:
        self._open: OrderedDict[str, Snapshot] = OrderedDict()

    def resume(self, cursor: str, index: str) -> tuple[Snapshot, int]:
        """The snapshot and offset a cursor points at; a 400 when it expired or names another index."""
        self._expire()
        sid, offset = _decode(cursor)
        snap = self._open.get(sid)
        if snap is None or snap.index != index:
            raise ApiError(400, "Cursor is not valid anymore")
        return snap, offset

    def open(self, snap: Snapshot) -> None:
        self._expire()
        self._open[snap.id] = snap

    def close(self, snap: Snapshot) -> None:
        self._open.pop(snap.id, None)

    @staticmethod
    def cursor(snap: Snapshot, offset: int) -> str:
        return base64.urlsafe_b64encode(f"{snap.id}:{offset}".encode()).decode()

    def _expire(self) -> None:
        now = time.monotonic()
        while self._open:
            oldest = next(iter(self._open.values()))
            if now - oldest.taken_at < BROWSE_TTL_S and len(self._open) <= BROWSE_SNAPSHOTS:
                break
            self._open.pop(oldest.id)


def _decode(cursor: str) -> tuple[str, int]:
    try:
        sid, offset = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        return sid, int(offset)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Cursor is not valid") from None
