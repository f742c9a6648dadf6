"""One `reindex` per table at a time, across hosts and through any pooler: a lease row
(`workerpool_reindex_leases`) that the running reindex renews from a thread of its own.

A session advisory lock would do the same on a direct connection, but needs one server session
from lock to unlock, which transaction pooling does not give: the unlock lands on another session
and the lock stays held. A lease also ends by itself when its holder dies (after LEASE_S).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from types import TracebackType

import psycopg

from workerpool.db.connection import DatabaseUnavailable, connect
from workerpool.db.queries import Q
from workerpool.logs import host_name, one_line

log = logging.getLogger(__name__)

LEASE_S = 60  # a dead reindex's table is free again this long after its last renewal
RENEW_S = LEASE_S / 4


class ReindexLeaseLost(Exception):
    """The lease ran out before it could be renewed (the database unreachable for LEASE_S): another
    reindex may have taken the table. The message is safe to print."""


class ReindexLease:
    """The lease on one table's reindex, held from `take` until the `with` block ends."""

    def __init__(self, dsn: str, table: str) -> None:
        self.dsn = dsn
        self.table = table
        self.holder = f"{host_name()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._valid_until = 0.0  # time.monotonic() past which the lease may be someone else's

    def take(self, conn: psycopg.Connection) -> tuple[str, datetime] | None:
        """Take the lease on `conn`; None when taken, else the other holder and when its lease ends."""
        row = conn.execute(Q.take_reindex_lease, {"t": self.table, "holder": self.holder, "secs": LEASE_S}).fetchone()
        if row is None or row[0] != self.holder:
            return (row[0], row[1]) if row else ("unknown", datetime.now(UTC))
        self._valid_until = time.monotonic() + LEASE_S
        return None

    def check(self) -> None:
        """Raise ReindexLeaseLost if the lease may have passed to another reindex."""
        if self._lost is None and time.monotonic() > self._valid_until:
            self._lost = f"the reindex lease on {self.table} ran out (the database did not answer for {LEASE_S} s)"
        if self._lost is not None:
            raise ReindexLeaseLost(self._lost)

    def __enter__(self) -> ReindexLease:
        self._thread = threading.Thread(target=self._renew, name="reindex-lease", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with connect(self.dsn, purpose="reindex-lease", timeout=5) as conn:
                conn.execute(Q.drop_reindex_lease, (self.table, self.holder))
        except (DatabaseUnavailable, psycopg.Error) as err:
            log.warning(
                "reindex lease not released; it ends by itself",
                extra={"action": "reindex_lease_kept", "table": self.table, "error": one_line(err)},
            )

    def _renew(self) -> None:
        conn: psycopg.Connection | None = None
        try:
            while not self._stop.wait(RENEW_S):
                try:
                    if conn is None or conn.closed:
                        conn = connect(self.dsn, purpose="reindex-lease", timeout=5)
                    if conn.execute(Q.renew_reindex_lease, (LEASE_S, self.table, self.holder)).fetchone() is None:
                        self._lost = f"the reindex lease on {self.table} was taken by another reindex"
                        return
                    self._valid_until = time.monotonic() + LEASE_S
                except (DatabaseUnavailable, psycopg.Error) as err:
                    log.warning(
                        "reindex lease not renewed; retrying",
                        extra={"action": "reindex_lease_retry", "table": self.table, "error": one_line(err)},
                    )
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()
