"""The operator dashboard at `/` of the health server: a static page that polls `/api/overview`.

- **Static files** (`static/`: `index.html`, `app.js`, `style.css`) ship inside the package and are
  read once; plain JavaScript with no build step, nothing fetched from elsewhere (works offline). A
  Content-Security-Policy keeps the page to its own origin.
- **Light on the database.** However many people watch, at most one query set runs at a time, and
  its result is shared for `CACHE_S` seconds (a lock around check-and-refresh: whoever comes while a
  refresh runs waits for it and gets its result). The dashboard keeps one connection of its own,
  opened on first use and reopened after an error, with a statement timeout.
- **Read-only unless `DASHBOARD_TOKEN` is set.** Actions are POSTs with `Authorization: Bearer
  <token>`: 403 when no token is configured, 401 without the header or with a wrong token. The only
  action returns failed rows to the queue, by id or per table, through `ops/tables.py` `retry_failed`
  (the function behind `workerpool retry-failed`). The token is never echoed; secrets are scrubbed
  from every error text the page shows.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from importlib import resources
from io import BufferedIOBase
from typing import Any

import orjson
import psycopg

from workerpool.capture.model import WatchError
from workerpool.config import Settings
from workerpool.db.connection import APPLICATION_NAME, configure, describe_error, with_tcp_liveness
from workerpool.db.queries import Q
from workerpool.logs import host_name, one_line
from workerpool.observability import vacuum
from workerpool.observability.dashboard.overview import MinuteSeries, collect
from workerpool.ops.tables import retry_failed

log = logging.getLogger(__name__)

CACHE_S = 1.5
REFRESH_MS = 2000  # how often the page polls
DB_TIMEOUT_S = 3
MAX_BODY_BYTES = 64 * 1024
MAX_IDS = 1000

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {  # URL path -> (file in static/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/assets/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/assets/style.css": ("style.css", "text/css; charset=utf-8"),
}
GET_PATHS = (*_STATIC, "/api/overview")
POST_PATHS = ("/api/retry",)
PATHS = (*GET_PATHS, *POST_PATHS)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # the request body was not read: the connection cannot be reused


def _json(status: int, doc: Any, **headers: str) -> Response:
    return Response(status, orjson.dumps(doc) + b"\n", "application/json", headers)


class Dashboard:
    """Serves the page, the overview document and the retry action for one supervisor."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._token = settings.dashboard_token
        self._secrets = [s for s in settings.secrets() if s]
        self._files = {
            path: (resources.files(__package__).joinpath("static", name).read_bytes(), ctype)
            for path, (name, ctype) in _STATIC.items()
        }
        self._lock = threading.Lock()  # one query set (or action) at a time, on one connection
        self._conn: psycopg.Connection | None = None
        self._series = MinuteSeries()
        self._cached: Response | None = None
        self._cached_at = 0.0
        self.refreshes = 0  # query sets run so far; each overview carries its number, so sharing is visible

    # ---- routing ---------------------------------------------------------------------------

    def get(self, path: str) -> Response:
        """GET or HEAD of one of PATHS."""
        if path in POST_PATHS:
            return _json(405, {"error": f"{path} takes POST"}, Allow="POST")
        if path == "/api/overview":
            return self.overview()
        body, ctype = self._files[path]
        return Response(
            200,
            body,
            ctype,
            {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"},
        )

    def post(self, path: str, headers: Message[str, str], rfile: BufferedIOBase) -> Response:
        """A POST: the body is read (bounded) first, so that the connection stays usable after a refusal."""
        try:
            length = int(headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            r = _json(413, {"error": f"Content-Length must be a number from 0 to {MAX_BODY_BYTES}"})
            r.close = True
            return r
        body = rfile.read(length) if length else b""
        if path not in POST_PATHS:
            allowed = path in GET_PATHS or path in ("/healthz", "/health", "/metrics")
            return _json(405 if allowed else 404, {"error": f"no action at {path}; actions: {', '.join(POST_PATHS)}"})
        refused = self._refuse(headers.get("Authorization"))
        if refused is not None:
            return refused
        content_type = headers.get("Content-Type")
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            return _json(415, {"error": f"Content-Type {content_type!r} is not accepted; send application/json"})
        try:
            doc = orjson.loads(body or b"{}")
        except orjson.JSONDecodeError:
            return _json(400, {"error": 'the body is not JSON; expected {"ids": [1, 2]} or {"table": "products"}'})
        return self.retry(doc)

    def _refuse(self, authorization: str | None) -> Response | None:
        """None when the request carries the configured token; otherwise the refusal."""
        if not self._token:
            return _json(403, {"error": "actions are disabled: DASHBOARD_TOKEN is not set for this supervisor"})
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _json(
                401,
                {"error": "this action needs the header Authorization: Bearer <DASHBOARD_TOKEN>"},
                **{"WWW-Authenticate": 'Bearer realm="workerpool"'},
            )
        if not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            return _json(
                401,
                {"error": "the bearer token does not match DASHBOARD_TOKEN"},
                **{"WWW-Authenticate": 'Bearer realm="workerpool", error="invalid_token"'},
            )
        return None

    # ---- the overview ------------------------------------------------------------------------

    def overview(self) -> Response:
        """The cached overview, or a fresh one when it is older than CACHE_S (one refresh at a time)."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached_at < CACHE_S:
                return self._cached
            try:
                with self._transaction(snapshot=True) as conn:
                    doc = collect(conn, self._series, self.settings.algolia_index_prefix)
                    health = vacuum.collect(conn, vacuum.Thresholds.from_settings(self.settings))
                doc["vacuum"] = {
                    **health.to_dict(),
                    "horizon_text": health.horizon.describe() if health.horizon else None,
                }
                doc["database"] = "ok"
                status = 200
            except psycopg.Error as exc:
                self._drop_connection()
                doc = {"database": "unreachable", "error": self._scrub(describe_error(self.settings.database_url, exc))}
                status = 503
            self.refreshes += 1
            doc.update(served_by=host_name(), refresh_ms=REFRESH_MS, actions=bool(self._token), refresh=self.refreshes)
            self._scrub_rows(doc)
            self._cached = _json(status, doc)
            self._cached_at = time.monotonic()
            return self._cached

    # ---- actions -----------------------------------------------------------------------------

    def retry(self, doc: Any) -> Response:
        """Return failed rows to the queue: `{"ids": [...]}` and/or `{"table": "..."}` (at least one)."""
        if not isinstance(doc, dict) or not set(doc) <= {"ids", "table"} or not doc:
            return _json(400, {"error": 'expected {"ids": [1, 2]} or {"table": "products"} (or both)'})
        ids, table = doc.get("ids"), doc.get("table")
        if ids is None and table is None:
            return _json(400, {"error": 'expected {"ids": [1, 2]} or {"table": "products"} (or both)'})
        if ids is not None and not (
            isinstance(ids, list) and 0 < len(ids) <= MAX_IDS and all(type(i) is int and 0 < i < 2**63 for i in ids)
        ):
            return _json(
                400,
                {
                    "error": f"ids={one_line(orjson.dumps(ids).decode(), 80)} is not a list of "
                    f"1 to {MAX_IDS} positive row ids"
                },
            )
        if table is not None and not (isinstance(table, str) and 0 < len(table) <= 200):
            return _json(400, {"error": f"table={one_line(orjson.dumps(table).decode(), 80)} is not a table name"})
        with self._lock:
            try:
                with self._transaction() as conn:
                    # As `retry-failed` does: the table named as `watch` takes it.
                    returned = retry_failed(conn, table, ids).returned
            except WatchError as exc:
                return _json(404, {"error": one_line(str(exc), 300)})
            except psycopg.Error as exc:
                self._drop_connection()
                return _json(503, {"error": self._scrub(describe_error(self.settings.database_url, exc))})
            self._cached = None  # the next poll shows the change
        log.info(
            "failed rows returned to the queue from the dashboard",
            extra={"action": "dashboard_retry", "table": table, "ids": ids, "returned": returned},
        )
        return _json(200, {"returned": returned})

    # ---- plumbing ----------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            dsn = self.settings.database_url
            self._conn = psycopg.connect(
                with_tcp_liveness(dsn),
                autocommit=True,
                connect_timeout=DB_TIMEOUT_S,
                application_name=f"{APPLICATION_NAME}:dashboard",
            )
            configure(self._conn)
        return self._conn

    @contextmanager
    def _transaction(self, snapshot: bool = False) -> Iterator[psycopg.Connection]:
        """The dashboard's connection, in a transaction whose statements may take DB_TIMEOUT_S each
        (a transaction-scoped setting: a pooler would hand a session one to other clients); with
        `snapshot`, a read-only one that reads everything in one snapshot."""
        conn = self._connection()
        with conn.transaction():
            if snapshot:
                conn.execute(Q.overview_snapshot)
            conn.execute(Q.local_statement_timeout, (f"{DB_TIMEOUT_S * 1000}ms",))
            yield conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _scrub_rows(self, doc: dict[str, Any]) -> None:
        if not self._secrets:
            return
        for index in doc.get("indices", ()):
            for row in index["failed_rows"]:
                if row["last_error"]:
                    row["last_error"] = self._scrub(row["last_error"])
