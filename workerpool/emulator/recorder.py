"""Recording the ``/1/`` requests an emulator receives, for tests that check what clients send
(tests/acceptance/test_conformance.py validates each against Algolia's OpenAPI description).

Off unless started (``Recorder.start``, or ``POST /_emulator/requests``), and bounded: benchmarks and
long runs pay one attribute check per request and hold nothing. The API key header is recorded as
``***``; bodies are kept as received (decompressed), as text.
"""

from __future__ import annotations

import threading
from collections import deque
from email.message import Message
from typing import Any

MAX_RECORDED = 20_000


class Recorder:
    """The requests received since `start`, oldest first, at most `limit` of them (the oldest dropped)."""

    def __init__(self) -> None:
        self.on = False
        self._lock = threading.Lock()
        self._requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)

    def start(self, limit: int = MAX_RECORDED) -> None:
        """Record from now on, forgetting what was recorded before."""
        with self._lock:
            self._requests = deque(maxlen=limit)
            self.on = True

    def stop(self) -> None:
        self.on = False

    def add(self, method: str, path: str, query: str, headers: Message[str, str], body: bytes) -> None:
        """Keep one request (a no-op unless recording)."""
        if not self.on:
            return
        kept = {k.lower(): ("***" if k.lower() == "x-algolia-api-key" else v) for k, v in headers.items()}
        entry = {"method": method, "path": path, "query": query, "headers": kept, "body": body.decode(errors="replace")}
        with self._lock:
            self._requests.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        """What was recorded, oldest first."""
        with self._lock:
            return list(self._requests)
