"""How an idle worker learns of new work: a NOTIFY on its own LISTEN connection, or the polling
interval when that connection is down (it is re-established in the background of the waits) or
when no notification can reach it: under transaction pooling a LISTEN holds for one transaction's
server session only, so without LISTEN_DATABASE_URL (a direct connection) the worker polls, says
so once in the log and sets `workerpool_worker_polling_only`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from workerpool.config import Settings
from workerpool.db import pooling
from workerpool.db.connection import DatabaseUnavailable, connect
from workerpool.db.queries import NOTIFY_CHANNEL, Q
from workerpool.logs import one_line
from workerpool.observability import metrics
from workerpool.process import liveness

log = logging.getLogger(__name__)

LISTEN_RETRY_S = 2.0


class Listener:
    """One worker's LISTEN connection, outside its pool."""

    def __init__(self, settings: Settings, number: int) -> None:
        self.dsn = settings.listen_database_url or settings.database_url
        self.own_dsn = bool(settings.listen_database_url)
        self.number = number
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0
        self._polling_only: bool | None = None

    def notifications_possible(self) -> bool:
        """Whether a NOTIFY can reach this worker: not through transaction pooling, unless LISTEN has
        a connection of its own (LISTEN_DATABASE_URL)."""
        possible = self.own_dsn or not pooling.transaction_pooling()
        if not possible and self._polling_only is None:
            log.warning(
                "notifications cannot reach this worker: DATABASE_URL goes through transaction pooling and "
                "LISTEN_DATABASE_URL is not set; it polls every POLLING_INTERVAL instead",
                extra={"action": "polling_only", "worker": self.number},
            )
        self._polling(not possible)
        return possible

    def _polling(self, polling: bool) -> None:
        if polling != self._polling_only:
            self._polling_only = polling
            metrics.record_polling_only(polling)

    def wait(self, seconds: float, interrupted: Callable[[], bool], sleep: Callable[[float], None]) -> bool:
        """Wait up to `seconds` for a NOTIFY; True when one arrived. `interrupted` ends the wait early
        (a stop request); `sleep` is the caller's interruptible sleep, used while the connection is down.
        The worker's loop waits here: its heartbeat goes on meanwhile."""
        deadline = time.monotonic() + seconds
        while not interrupted():
            liveness.beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            conn = self._connection() if self.notifications_possible() else None
            if conn is None:
                sleep(min(0.25, left))
                continue
            try:
                for _ in conn.notifies(timeout=min(0.25, left), stop_after=1):
                    return True
            except psycopg.Error as exc:
                log.warning(
                    "listen connection lost; polling until it is back",
                    extra={"action": "listen_lost", "worker": self.number, "error": one_line(exc)},
                )
                self.close()
                self._polling(True)
        return False

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection | None:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        now = time.monotonic()
        if now < self._retry_at:
            return None
        try:
            self._conn = connect(self.dsn, purpose=f"listen-{self.number}", timeout=5)
            self._conn.execute(sql.SQL(Q.listen).format(sql.Identifier(NOTIFY_CHANNEL)))
            self._polling(False)
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self.close()
            self._polling(True)
            self._retry_at = now + LISTEN_RETRY_S
            log.warning(
                "listen connection failed; polling",
                extra={"action": "listen_failed", "worker": self.number, "error": one_line(exc)},
            )
        return self._conn
