"""One emulated index, and which of its settings a copy carries."""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from workerpool.emulator.common import Record, now_iso


class Index:
    """One index: records keyed by objectID, settings, timestamps."""

    __slots__ = ("created_at", "records", "settings", "updated_at")

    def __init__(self) -> None:
        now = now_iso()
        self.records: dict[str, Record] = {}
        self.settings: dict[str, Any] = {}
        self.created_at = now
        self.updated_at = now


NOT_COPIED = ("mode", "enableReRanking", "replicas")  # Algolia's operationIndex: "You can't copy" them


def copyable(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings an operationIndex copy carries: all but NOT_COPIED, as Algolia documents."""
    return {k: deepcopy(v) for k, v in settings.items() if k not in NOT_COPIED}
