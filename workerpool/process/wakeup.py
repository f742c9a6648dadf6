"""How an idle worker learns of new work: a NOTIFY on its own LISTEN connection, or the polling
interval when that connection is down (it is re-established in the background of the waits)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import psycopg
from psycopg import sql

from workerpool.db.connection import DatabaseUnavailable, connect
from workerpool.db.queries import NOTIFY_CHANNEL, Q
from workerpool.logs import one_line
from workerpool.process import liveness

log = logging.getLogger(__name__)

LISTEN_RETRY_S = 2.0


class Listener:
    """One worker's LISTEN connection, outside its pool."""

    def __init__(self, dsn: str, number: int) -> None:
        self.dsn = dsn
        self.number = number
        self._conn: psycopg.Connection | None = None
        self._retry_at = 0.0

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
            conn = self._connection()
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
        except (DatabaseUnavailable, psycopg.Error) as exc:
            self.close()
            self._retry_at = now + LISTEN_RETRY_S
            log.warning(
                "listen connection failed; polling",
                extra={"action": "listen_failed", "worker": self.number, "error": one_line(exc)},
            )
        return self._conn
