"""What the emulator's modules share: its defaults, Algolia's error shape, JSON bodies, timestamps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

DEFAULT_APP_ID = "EMULATOR"
DEFAULT_API_KEY = "emulator-admin-key"
DEFAULT_MAX_RECORD_BYTES = 10_000
DEFAULT_PORT = 8089

Record = dict[str, Any]

# A key absent from a request body (None is a value a client can send).
MISSING: Any = object()
# bool is deliberately not a number here.
NUMBER_TYPES = frozenset({int, float})


class ApiError(Exception):
    """An error answered in Algolia's shape: ``{"message": ..., "status": ...}`` (+ extra keys)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.payload: dict[str, Any] = {"message": message, **extra, "status": status}


def now_iso() -> str:
    """UTC now as Algolia writes timestamps: ``2024-01-02T03:04:05.678Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_number(value: object) -> bool:
    """An int or a float, and not a bool."""
    return type(value) in NUMBER_TYPES


def loads(raw: bytes) -> Any:
    """A request body as JSON (an empty body is ``{}``); ApiError 400 when it is not JSON."""
    if not raw:
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Invalid JSON: {exc}") from None
