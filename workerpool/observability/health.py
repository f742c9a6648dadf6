"""`/healthz` and `/metrics` for one supervisor, served on HEALTH_HOST:HEALTH_PORT from a daemon thread
(HEALTH_HOST is 127.0.0.1 unless set: 0.0.0.0 for Prometheus on another host and Kubernetes probes).

`/healthz` answers 200 with a small JSON body when all three hold, otherwise 503 with the reasons:

1. **workers alive**: the supervisor has as many live worker processes as it wants (a worker waiting
   out its restart backoff counts as down);
2. **database answers**: a fresh connection runs a query within `DB_TIMEOUT_S`;
3. **the backlog moves**: when rows are waiting (pending and due, pending after a failed attempt, or
   processing) and the oldest of them has waited more than `HEALTH_STALL_SECONDS` (default 60), a
   batch of this supervisor's workers must have settled rows (acknowledged, or failed for good) within
   the last `HEALTH_STALL_SECONDS`. The time of the last acknowledgement comes from the workers'
   multiprocess metric `workerpool_last_ack_timestamp_seconds` (`metrics.last_ack_time`); the
   supervisor's start time stands in until the first one.

A 200 body may carry `warnings` (the status stays 200: vacuum trouble hurts slowly, restarting the
pool does not cure it): the hot tables' dead tuples outgrowing their live ones, or the xmin horizon
held back too long, naming what holds it (`vacuum.collect`, thresholds VACUUM_WARN_*).

`/metrics` is the Prometheus text format: the workers' merged multiprocess metrics plus, read from the
database at scrape time, queue depth by table and status, the oldest pending age by table, the hot
tables' size and live and dead tuples, the xmin horizon's age and holder, and the supervisor's own
worker counts.

`/` is the operator dashboard and `/api/…` its JSON and actions (`workerpool.dashboard`). They answer
only a request whose `Host` header names an IP address, `localhost`, this host's name or HEALTH_HOST
(421 otherwise): a page on another site that re-points its own DNS name at this address (DNS
rebinding) sends its own name as the Host, and must not read `/api/overview` from an operator's
browser. A connection that sends nothing for IDLE_TIMEOUT_S is closed, and at most MAX_CONNECTIONS
are served at once (one thread each; `serving`): idle or half-open connections cannot pile up threads.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
import psycopg

from workerpool.config import ConfigError
from workerpool.db.connection import DatabaseUnavailable, connect, one_row
from workerpool.db.queries import Q
from workerpool.observability import dashboard, metrics, vacuum
from workerpool.observability.serving import IDLE_TIMEOUT_S, BoundedServer, host_allowed

if TYPE_CHECKING:
    from workerpool.config import Settings

log = logging.getLogger(__name__)

DEFAULT_STALL_SECONDS = 60.0
DB_TIMEOUT_S = 3
DB_CACHE_S = 1.0


def stall_seconds(settings: Any) -> float:
    """HEALTH_STALL_SECONDS: how long a backlog may stand still before /healthz fails."""
    return float(settings.health_stall_seconds)


@dataclass(frozen=True)
class Pool:
    """What the supervisor last published about its workers (`HealthServer.publish`): the HTTP
    thread reads this snapshot, never the supervisor's own state."""

    pids: tuple[int, ...] = ()
    wanted: int = 0
    stopping: bool = False

    def alive(self) -> int:
        return sum(1 for pid in self.pids if _pid_alive(pid))


@dataclass
class HealthServer:
    settings: Settings
    httpd: ThreadingHTTPServer
    thread: threading.Thread
    started_wall: float = field(default_factory=time.time)
    stall_s: float = DEFAULT_STALL_SECONDS
    _db_lock: threading.Lock = field(default_factory=threading.Lock)
    _db_result: tuple[float, dict[str, Any] | Exception] | None = None  # when, and the check's result or error
    pool: Pool = field(default_factory=Pool)

    def __post_init__(self) -> None:
        self.dashboard = dashboard.Dashboard(self.settings)

    def publish(self, pool: Pool) -> None:
        """The supervisor's workers as they are now (one attribute swap: safe to read from any thread)."""
        self.pool = pool

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    # ---- checks ------------------------------------------------------------------------------

    def _database(self) -> dict[str, Any]:
        """The database check, at most one at a time and at most one per DB_CACHE_S: a burst of
        probes and scrapes shares one result instead of opening a connection each."""
        with self._db_lock:
            now = time.monotonic()
            if self._db_result is None or now - self._db_result[0] > DB_CACHE_S:
                try:
                    self._db_result = (now, self._query_database())
                except (psycopg.Error, DatabaseUnavailable) as exc:
                    self._db_result = (time.monotonic(), exc)
            _, result = self._db_result
        if isinstance(result, Exception):
            raise result
        return result

    def _query_database(self) -> dict[str, Any]:
        """One short connection: the backlog (rows that should be moving) and the queue by status."""
        with (
            connect(self.settings.database_url, purpose="health", timeout=DB_TIMEOUT_S) as conn,
            conn.transaction(),
        ):
            conn.execute(Q.local_statement_timeout, (f"{DB_TIMEOUT_S * 1000}ms",))
            # Keys still in the inbox (not yet moved into the queue) wait like pending rows (status "inbox").
            backlog, oldest = one_row(conn.execute(Q.health_backlog))
            depth = conn.execute(Q.health_queue_depth).fetchall()
            ages = conn.execute(Q.health_oldest_pending).fetchall()
            health = vacuum.collect(conn, vacuum.Thresholds.from_settings(self.settings))
        return {
            "backlog": int(backlog or 0),
            "backlog_oldest_s": float(oldest or 0.0),
            "depth": depth,
            "ages": ages,
            "vacuum": health,
        }

    def health(self) -> tuple[int, dict[str, Any]]:
        pool = self.pool
        reasons: list[str] = []
        alive = pool.alive()
        body: dict[str, Any] = {"workers_alive": alive, "workers_wanted": pool.wanted}
        if pool.stopping:
            reasons.append("the supervisor is stopping")
        if alive < pool.wanted:
            reasons.append(f"{alive} of {pool.wanted} workers alive")
        try:
            db = self._database()
            body["database"] = "ok"
            body["backlog"] = db["backlog"]
            body["backlog_oldest_s"] = round(db["backlog_oldest_s"], 1)
            horizon = db["vacuum"].horizon
            body["xmin_horizon"] = (
                {"held_by": horizon.describe(), "age_s": horizon.age_s, "age_xids": horizon.age_xids}
                if horizon
                else None
            )
        except (psycopg.Error, DatabaseUnavailable) as exc:
            body["database"] = "unreachable"
            reasons.append(f"database: {' '.join(str(exc).split())[:300] or type(exc).__name__}")
            db = None
        if metrics.auth_failing():
            body["algolia"] = "credentials refused"
            reasons.append(
                "Algolia refuses ALGOLIA_APP_ID/ALGOLIA_ADMIN_KEY (401/403): nothing is sent and rows "
                "wait, without spending attempts, until the key works again"
            )
        down_for = metrics.algolia_unreachable_for()
        limit = self.settings.health_algolia_down_seconds
        body["algolia_unreachable_s"] = round(down_for, 1) if down_for is not None else None
        if down_for is not None and down_for > limit:
            body["algolia"] = "unreachable"
            reasons.append(
                f"Algolia unreachable for {down_for:.0f}s (5xx, network errors, timeouts or answers that are not "
                f"Algolia's; HEALTH_ALGOLIA_DOWN_SECONDS={limit}): rows wait without spending attempts"
            )
        last_ack = metrics.last_ack_time()
        now = time.time()
        since = now - max(last_ack or 0.0, self.started_wall)
        body["last_ack_age_s"] = round(now - last_ack, 1) if last_ack else None
        body["stall_after_s"] = self.stall_s
        if db and db["backlog"] and db["backlog_oldest_s"] > self.stall_s and since > self.stall_s:
            reasons.append(
                f"backlog of {db['backlog']} row(s) not moving: oldest waits {db['backlog_oldest_s']:.0f}s, "
                f"no batch acknowledged in {since:.0f}s (HEALTH_STALL_SECONDS={self.stall_s:g})"
            )
        if reasons:
            body.update(status="unhealthy", reasons=reasons)
            return 503, body
        body["status"] = "ok"
        if db and db["vacuum"].warnings:
            body["warnings"] = db["vacuum"].warnings
        return 200, body

    def metrics_text(self) -> bytes:
        from prometheus_client import generate_latest
        from prometheus_client.core import GaugeMetricFamily

        reg = metrics.registry()
        server = self

        class _Live:
            def collect(self) -> Any:
                pool = server.pool
                workers = GaugeMetricFamily(
                    "workerpool_workers", "Worker processes of this supervisor", labels=["state"]
                )
                workers.add_metric(["alive"], pool.alive())
                workers.add_metric(["wanted"], pool.wanted)
                yield workers
                up = GaugeMetricFamily("workerpool_database_up", "1 when the database answered this scrape")
                depth = GaugeMetricFamily(
                    "workerpool_queue_depth",
                    "Rows in algolia_sync_queue by status, and keys waiting in the inbox (status inbox)",
                    labels=["table", "status"],
                )
                oldest = GaugeMetricFamily(
                    "workerpool_oldest_pending_age_seconds", "Age of the oldest pending row", labels=["table"]
                )
                try:
                    db = server._database()
                except psycopg.Error:
                    up.add_metric([], 0)
                    yield up
                    return
                up.add_metric([], 1)
                seen = set()
                for table, status, count in db["depth"]:
                    depth.add_metric([table, status], count)
                    seen.add((table, status))
                for table in {t for t, _ in seen}:
                    for status in ("pending", "processing", "failed", "inbox"):
                        if (table, status) not in seen:
                            depth.add_metric([table, status], 0)
                for table, age in db["ages"]:
                    oldest.add_metric([table], age or 0.0)
                for table in {t for t, _ in seen} - {t for t, _ in db["ages"]}:
                    oldest.add_metric([table], 0.0)  # nothing pending: no lag, rather than no series
                yield up
                yield depth
                yield oldest
                yield from vacuum.prometheus_families(db["vacuum"])

        reg.register(_Live())
        return generate_latest(reg)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) still answers kill(0); the supervisor reaps it within a second.
    return True


class _Handler(BaseHTTPRequestHandler):
    server_version = "workerpool-health"
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S  # StreamRequestHandler sets it on the socket: a silent client is dropped

    def _misdirected(self, owner: HealthServer) -> bool:
        """Refuse (421) a dashboard request whose Host is a name that may have been rebound to us."""
        if host_allowed(self.headers.get("Host"), owner.settings.health_host):
            return False
        self.close_connection = True
        self._send(
            421,
            b'{"error":"the dashboard answers a Host that is an IP address, localhost or this host\'s name"}\n',
            "application/json",
        )
        return True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        owner: HealthServer = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/healthz", "/health"):
                status, body = owner.health()
                self._send(status, orjson.dumps(body) + b"\n", "application/json")
            elif path == "/metrics":
                from prometheus_client import CONTENT_TYPE_LATEST

                self._send(200, owner.metrics_text(), CONTENT_TYPE_LATEST)
            elif path in dashboard.PATHS:
                if self._misdirected(owner):
                    return
                r = owner.dashboard.get(path)
                self._send(r.status, r.body, r.content_type, r.headers)
            else:
                self._send(404, b'{"status":"not found","paths":["/healthz","/metrics","/"]}\n', "application/json")
        except Exception as exc:  # never kill the thread; say what broke
            self._send(
                500,
                orjson.dumps({"status": "error", "error": f"{type(exc).__name__}: {exc}"}) + b"\n",
                "application/json",
            )

    do_HEAD = do_GET  # noqa: N815 (http.server dispatches on the name do_<METHOD>)

    def do_POST(self) -> None:
        owner: HealthServer = self.server.owner  # type: ignore[attr-defined]
        if self._misdirected(owner):
            return
        try:
            r = owner.dashboard.post(self.path.split("?", 1)[0], self.headers, self.rfile)
        except Exception as exc:  # never kill the thread; say what broke
            r = dashboard.Response(
                500, orjson.dumps({"status": "error", "error": f"{type(exc).__name__}: {exc}"}) + b"\n", close=True
            )
        self.close_connection = self.close_connection or r.close
        self._send(r.status, r.body, r.content_type, r.headers)


class _IPv6Server(BoundedServer):
    address_family = socket.AF_INET6


def start(settings: Settings) -> HealthServer | None:
    """Set up metrics and serve /healthz and /metrics, when HEALTH_PORT is set. Call before forking;
    then `publish` the workers as they change."""
    if not settings.health_port:
        return None
    stall = stall_seconds(settings)
    metrics.setup()
    host = settings.health_host
    server_class = _IPv6Server if ":" in host else BoundedServer
    try:
        httpd = server_class((host, settings.health_port), _Handler)
    except OSError as exc:
        metrics.teardown()
        raise ConfigError(
            f"HEALTH_PORT={settings.health_port} cannot be used on HEALTH_HOST={host}: {exc.strerror or exc}"
        ) from None
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.25}, name="workerpool-health", daemon=True
    )
    server = HealthServer(settings, httpd, thread, stall_s=stall)
    httpd.owner = server  # type: ignore[attr-defined]
    thread.start()
    url_host = f"[{host}]" if ":" in host else host
    log.info(
        "health server listening",
        extra={"action": "health_started", "url": f"http://{url_host}:{server.port}", "stall_after_s": stall},
    )
    return server


def stop(server: HealthServer | None) -> None:
    """Stop serving and remove the metrics directory (after every worker was reaped)."""
    if server is None:
        return
    server.httpd.shutdown()
    server.httpd.server_close()
    server.thread.join(timeout=5)
    server.dashboard.close()
    metrics.teardown()
