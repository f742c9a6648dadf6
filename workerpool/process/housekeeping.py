"""A worker's periodic duties between claims: its heartbeat row (what `stats` and the dashboard show
per worker), returning claims whose lease expired (their worker died), and log retention."""

from __future__ import annotations

import logging
import os

import psycopg

from workerpool.config import Settings
from workerpool.db.queries import Q
from workerpool.logs import host_name
from workerpool.process.retention import Retention
from workerpool.runtime import queue

log = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 5.0
RECOVERY_TIMEOUT_MS = 10_000


class Housekeeping:
    """When each duty is next due, and doing it."""

    def __init__(self, settings: Settings, number: int, worker_id: str) -> None:
        self.settings = settings
        self.number = number
        self.worker_id = worker_id
        self._next_heartbeat = 0.0
        self._next_recovery = 0.0
        self._retention = Retention(settings.log_retention_days)

    def due(self, now: float, stopping: bool) -> bool:
        return now >= self._next_heartbeat or now >= self._next_recovery or (not stopping and self._retention.due(now))

    def run(self, conn: psycopg.Connection, now: float, batches: int, records: int, stopping: bool) -> None:
        """Whatever is due; a database error propagates (the worker's trouble handling)."""
        if now >= self._next_heartbeat:
            queue.heartbeat(conn, self.worker_id, host_name(), os.getpid(), batches, records)
            self._next_heartbeat = now + HEARTBEAT_EVERY_S
        if now >= self._next_recovery:
            self._recover(conn)
            self._next_recovery = now + queue.recovery_interval_s(self.settings.lease_timeout)
        if not stopping and self._retention.due(now):
            self._retention.step(conn, now)

    def _recover(self, conn: psycopg.Connection) -> None:
        """Return expired claims, under RECOVERY_TIMEOUT_MS: the worker's settled batches wait while it
        runs, so a recovery that takes longer (a plan gone wrong) gives way and runs again later."""
        try:
            with conn.transaction():
                conn.execute(Q.local_statement_timeout, (f"{RECOVERY_TIMEOUT_MS}ms",))
                n = queue.recover_expired(conn, self.settings.max_retries)
        except psycopg.errors.QueryCanceled:
            log.warning(
                f"recovering expired claims took over {RECOVERY_TIMEOUT_MS} ms; trying again later",
                extra={"action": "recovery_timeout", "worker": self.number},
            )
            return
        if n:
            log.warning(
                "expired claims recovered", extra={"action": "leases_recovered", "worker": self.number, "rows": n}
            )

    def forget(self, conn: psycopg.Connection) -> None:
        """This worker's heartbeat row goes when it stops."""
        queue.forget_worker(conn, self.worker_id)
