"""The test hooks under ``/_emulator/``: stats, reset, faults, round trip, task and publish delays,
an index's (published) records, the task log.

No auth, so they answer loopback clients only. ``Emulator`` mirrors them as methods, since tests
often run workers in other processes.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import orjson

from workerpool.emulator.common import ApiError, loads
from workerpool.emulator.state import EmulatorState

LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
_INDEXES = "/_emulator/indexes/"
_TASKS = "/_emulator/tasks/"


def _json(status: int, obj: Any) -> tuple[int, bytes]:
    return status, orjson.dumps(obj)


def _error(status: int, message: str) -> tuple[int, bytes]:
    return _json(status, {"message": message, "status": status})


def answer(state: EmulatorState, client_host: str, method: str, path: str, raw: bytes) -> tuple[int, bytes]:
    """(HTTP status, JSON body) for ``method path`` from ``client_host``."""
    if client_host not in LOOPBACK:
        return _error(403, "The /_emulator/ endpoints only answer 127.0.0.1")
    if path == "/_emulator/stats" and method == "GET":
        return _json(200, state.stats())
    if path == "/_emulator/health" and method == "GET":
        return _json(200, {"ok": True})
    if path == "/_emulator/reset" and method == "POST":
        state.reset()
        return _json(200, {"ok": True})
    if path == "/_emulator/faults" and method == "GET":
        return _json(200, {"faults": state.fault_queue.describe()})
    if path == "/_emulator/faults" and method == "DELETE":
        state.fault_queue.clear()
        return _json(200, {"ok": True})
    if path == "/_emulator/faults" and method == "POST":
        try:
            body = loads(raw)
            specs = body if isinstance(body, list) else [body]
            if not all(isinstance(spec, dict) for spec in specs):
                raise ValueError("a fault is a JSON object")
            state.inject_faults(specs)
        except ApiError as exc:
            return _json(400, exc.payload)
        except (TypeError, ValueError) as exc:
            return _error(400, f"Invalid fault: {exc}")
        return _json(200, {"ok": True, "faults": state.fault_queue.describe()})
    if path == "/_emulator/rtt" and method == "POST":
        try:
            body = loads(raw)
            state.fault_queue.set_rtt(body.get("rtt_ms", 0), body.get("jitter_ms", 0))
        except (ApiError, AttributeError, TypeError, ValueError) as exc:
            return _error(400, f"Invalid round trip: {exc}")
        return _json(
            200, {"ok": True, "rtt_ms": state.fault_queue.rtt_ms, "jitter_ms": state.fault_queue.rtt_jitter_ms}
        )
    if path == "/_emulator/task-delay" and method == "POST":
        try:
            state.fault_queue.set_task_delay(loads(raw).get("seconds", 0))
        except (ApiError, AttributeError, TypeError, ValueError) as exc:
            return _error(400, f"Invalid task delay: {exc}")
        return _json(200, {"ok": True, "seconds": state.fault_queue.task_delay_s})
    if path == "/_emulator/requests" and method == "POST":
        state.recorder.start()
        return _json(200, {"ok": True, "recording": True})
    if path == "/_emulator/requests" and method == "GET":
        return _json(200, {"recording": state.recorder.on, "requests": state.recorder.requests()})
    if path == "/_emulator/publish-delay" and method == "POST":
        try:
            body = loads(raw)
            state.publishing.set_delay(body.get("delay_ms", 0), body.get("per_record_ms", 0))
        except (ApiError, AttributeError, TypeError, ValueError) as exc:
            return _error(400, f"Invalid publish delay: {exc}")
        publishing = state.publishing
        return _json(200, {"ok": True, "delay_ms": publishing.delay_ms, "per_record_ms": publishing.per_record_ms})
    if path == "/_emulator/tasks" and method == "GET":
        return _json(200, {"tasks": state.publishing.task_log()})
    if path.startswith(_TASKS) and method == "GET":
        return _json(200, {"tasks": state.publishing.task_log(unquote(path[len(_TASKS) :]))})
    if path.startswith(_INDEXES) and method == "GET":
        return 200, state.records_json(unquote(path[len(_INDEXES) :]))
    return _error(404, "Not Found")
