"""JSON logs on stdout, one line per event, with secrets scrubbed.

Log calls pass structured fields through `extra` (procrastinate's style), e.g.
``log.info("batch synced", extra={"action": "batch_synced", "batch": 100})``; python-json-logger
turns them into keys of the JSON line. A filter on the handler replaces every configured secret
(the Algolia key, the database password) wherever it appears: message, fields or traceback.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from workerpool import redaction


class SecretFilter(logging.Filter):
    """Replaces secret values with '***' before a record is formatted."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s and len(s) >= 3]

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            return redaction.scrub(value, self.secrets)
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        record.msg = self._scrub(record.getMessage())
        record.args = None
        for key, value in list(record.__dict__.items()):
            if isinstance(value, str) and key not in ("msg", "name", "levelname", "pathname", "filename", "module"):
                record.__dict__[key] = self._scrub(value)
        if record.exc_info:
            # Format the traceback now so that the scrubbed text is what gets printed.
            record.exc_text = str(self._scrub(logging.Formatter().formatException(record.exc_info)))
            record.exc_info = None
        return True


class _Formatter(JsonFormatter):
    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        log_record["level"] = record.levelname.lower()
        log_record.setdefault("pid", record.process)
        log_record.pop("levelname", None)
        if record.exc_text and "exc_info" not in log_record:
            log_record["exc_info"] = record.exc_text


def setup(level: str = "INFO", secrets: Iterable[str] = (), stream: TextIO | None = None) -> None:
    """Route every `workerpool.*` logger to one JSON handler on stdout."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        _Formatter(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"name": "logger"},
            timestamp="time",
        )
    )
    handler.addFilter(SecretFilter(secrets))
    for name, logger_level in (("workerpool", level), ("psycopg", "WARNING")):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(logger_level)
        logger.propagate = False


def host_name() -> str:
    """This host's name, as recorded in heartbeats and logs (HOSTNAME wins, for containers)."""
    return os.environ.get("WORKERPOOL_HOSTNAME") or socket.gethostname()


def one_line(value: object, limit: int = 2000) -> str:
    """An error or message folded onto one line, for log fields and last_error."""
    return " ".join(str(value).split())[:limit]
