"""The HTTP server (one thread per connection) and the ``Emulator`` handle."""

from __future__ import annotations

import contextlib
import gzip
import logging
import socket
import socketserver
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import orjson

from workerpool.emulator.api import Call, match_route
from workerpool.emulator.client import make_client
from workerpool.emulator.common import (
    DEFAULT_API_KEY,
    DEFAULT_APP_ID,
    DEFAULT_MAX_RECORD_BYTES,
    ApiError,
    Record,
)
from workerpool.emulator.faults import Fault
from workerpool.emulator.hooks import answer as answer_hook
from workerpool.emulator.state import EmulatorState

if TYPE_CHECKING:  # the client is heavy to import; the server itself never needs it
    from algoliasearch.search.client import SearchClientSync

log = logging.getLogger("workerpool.emulator")

_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks live connections so ``stop`` can close idle keep-alives."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        self.state = state
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also resolves the host's FQDN (a DNS lookup); it is never used.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def track(self, conn: socket.socket, add: bool) -> None:
        with self._conns_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Routes ``/1/`` to the Algolia endpoints and ``/_emulator/`` to the test hooks."""

    protocol_version = "HTTP/1.1"
    server_version = "AlgoliaEmulator/1.0"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):  # headers and body go out in one write, but never wait on Nagle
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    # -- plumbing ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            data = b"".join(parts)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length > 0 else b""
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip" and data:
            data = gzip.decompress(data)
        return data

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        head = (
            f"HTTP/1.1 {status} {_PHRASES.get(status, '')}\r\n"
            f"Content-Type: application/json; charset=UTF-8\r\nContent-Length: {len(payload)}\r\n"
        )
        if headers:
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if self.close_connection:
            head += "Connection: close\r\n"
        self.wfile.write(head.encode("latin-1") + b"\r\n" + payload)
        if log.isEnabledFor(logging.DEBUG):
            self.log_request(status, len(payload))

    def _send_not_algolia(self, fault: Fault) -> None:
        """A 200 that is not Algolia's answer: a fixed text, a trickle, or a huge body (streamed, never
        held whole in memory)."""
        size = len(fault.answer.encode()) if fault.answer is not None else fault.trickle_bytes or fault.huge_bytes
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        self.close_connection = True
        self.wfile.write(head.encode("latin-1"))
        if fault.answer is not None:
            self.wfile.write(fault.answer.encode())
        elif fault.trickle_bytes:
            for _ in range(fault.trickle_bytes):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(fault.trickle_interval_ms / 1000)
        else:
            block = b" " * (1 << 20)
            left = fault.huge_bytes
            while left > 0:
                self.wfile.write(block[: min(left, len(block))])
                left -= len(block)

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, orjson.dumps(obj), headers)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"message": message, "status": status}, headers)

    def _handle(self) -> None:
        path, _, query = self.path.partition("?")
        try:
            raw = self._read_body()
        except Exception:  # bad Content-Length, broken chunking or gzip, client gone
            self.close_connection = True
            self._error(400, "Unreadable request body")
            return
        try:
            if path.startswith("/1/"):
                self._handle_api(path, query, raw)
            elif path.startswith("/_emulator/"):
                self._send(*answer_hook(self.server.state, self.client_address[0], self.command, path, raw))
            else:
                self._error(404, "Not Found")
        except ConnectionError:  # the client went away mid-response
            self.close_connection = True
        except Exception:
            log.exception("emulator: internal error on %s %s", self.command, self.path)
            self.close_connection = True
            self._error(500, "Internal emulator error")

    do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 - the names http.server dispatches to

    def _handle_api(self, path: str, query: str, raw: bytes) -> None:
        state = self.server.state
        state.count_request()
        state.recorder.add(self.command, path, query, self.headers, raw)
        route, args = match_route(self.command, path)
        delay, fault = state.fault_queue.take(route.write if route is not None else self.command != "GET")
        if delay:
            time.sleep(delay)
        if fault is not None:
            if fault.drop:
                state.count_rejected("dropped")
                self.close_connection = True  # no response at all: the socket just closes
                return
            if fault.status is None:
                state.count_rejected("not_algolia")
                self._send_not_algolia(fault)
                return
            status = fault.status or 500  # a fault that does not drop has a status (build_fault)
            state.count_rejected(status)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            self._error(status, f"{_PHRASES.get(status, 'Error')} (emulator fault)", headers)
            return
        params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
        headers_in = self.headers
        app_id = headers_in.get("x-algolia-application-id") or params.get("x-algolia-application-id")
        api_key = headers_in.get("x-algolia-api-key") or params.get("x-algolia-api-key")
        if app_id != state.app_id or api_key != state.api_key:
            state.count_rejected(403)
            self._error(403, "Invalid Application-ID or API key")
            return
        if route is None:
            state.count_rejected(404)
            self._error(404, "Not Found")
            return
        try:
            result = route.handler(Call(state, args, params, raw))
        except ApiError as exc:
            state.count_rejected(exc.status)
            self._send_json(exc.status, exc.payload)
            return
        self._send_json(200, result)


class Emulator:
    """An Algolia emulator serving HTTP from a daemon thread.

    >>> with Emulator() as emu:
    ...     client = make_client(emu.url, emu.app_id, emu.api_key)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        app_id: str = DEFAULT_APP_ID,
        api_key: str = DEFAULT_API_KEY,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.state = EmulatorState(app_id, api_key, max_record_bytes)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def app_id(self) -> str:
        return self.state.app_id

    @property
    def api_key(self) -> str:
        return self.state.api_key

    def start(self) -> Emulator:
        """Bind (OSError if the port is taken) and serve in a daemon thread; returns self."""
        if self._httpd is None:
            self._httpd = _HTTPServer((self.host, self.port), self.state)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="algolia-emulator", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection (idle keep-alives included)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL, with the real port once bound (e.g. ``http://127.0.0.1:54321``)."""
        if self._httpd is None:
            raise RuntimeError("the emulator is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://[{host!s}]:{port}" if ":" in str(host) else f"http://{host!s}:{port}"

    def client(self) -> SearchClientSync:
        """A real algoliasearch client pointed at this emulator."""
        return make_client(self.url, self.app_id, self.api_key)

    def inject_fault(
        self,
        *,
        status: int | None = None,
        retry_after: int | None = None,
        count: int | None = None,
        seconds: float | None = None,
        drop: bool = False,
        latency_ms: float | None = None,
        writes_only: bool = False,
        answer: str | None = None,
        trickle_bytes: int | None = None,
        trickle_interval_ms: float | None = None,
        huge_bytes: int | None = None,
    ) -> None:
        """Queue a fault for ``/1/`` requests (as ``POST /_emulator/faults``): an HTTP error ``status``
        (with ``Retry-After`` for 429), a dropped connection (``drop``) or added latency (``latency_ms``,
        which may also delay a status/drop fault), or a 200 that is not Algolia's answer: the text
        ``answer``, ``trickle_bytes`` bytes one every ``trickle_interval_ms``, or ``huge_bytes`` bytes.
        It lasts ``count`` requests and/or ``seconds``, whichever runs out first; with neither, until
        ``clear_faults``. ``writes_only`` spares reads. ValueError if the fault makes no sense."""
        self.state.inject_faults(
            [
                {
                    "status": status,
                    "retry_after": retry_after,
                    "count": count,
                    "seconds": seconds,
                    "drop": drop,
                    "latency_ms": latency_ms,
                    "writes_only": writes_only,
                    "answer": answer,
                    "trickle_bytes": trickle_bytes,
                    "trickle_interval_ms": trickle_interval_ms,
                    "huge_bytes": huge_bytes,
                }
            ]
        )

    def clear_faults(self) -> None:
        """Remove every queued fault (``DELETE /_emulator/faults``)."""
        self.state.fault_queue.clear()

    def set_rtt(self, rtt_ms: float, jitter_ms: float = 0.0) -> None:
        """Hold every `/1/` answer for a round trip of `rtt_ms`, ± up to `jitter_ms` (uniform): a far
        Algolia region, for benchmarks and tests (``POST /_emulator/rtt``). Reset clears it."""
        self.state.fault_queue.set_rtt(rtt_ms, jitter_ms)

    def set_task_delay(self, seconds: float) -> None:
        """Tasks created from now on stay `notPublished` for `seconds`, as a large index's copy or move
        does on Algolia's side. Reset clears it."""
        self.state.fault_queue.set_task_delay(seconds)

    def set_publish_delay(self, delay_ms: float, per_record_ms: float = 0.0) -> None:
        """Record writes accepted from now on stay `notPublished`, and unreadable, for `delay_ms` plus
        `per_record_ms` per record, after the previous task of their index: Algolia's asynchronous
        indexing, and its queue under load (``POST /_emulator/publish-delay``). 0, 0 (the default, and
        after reset): published at once. ValueError unless both are non-negative numbers."""
        self.state.publishing.set_delay(delay_ms, per_record_ms)

    def task_log(self, index: str | None = None) -> list[dict[str, Any]]:
        """The last 100,000 record-write tasks (of `index`), oldest first: ``{"task_id", "index", "records",
        "accepted_at", "published_at"}`` in Unix seconds, ``published_at`` None until published
        (``GET /_emulator/tasks``, ``GET /_emulator/tasks/{i}``)."""
        return self.state.publishing.task_log(index)

    def stats(self) -> dict[str, Any]:
        """Counters (``GET /_emulator/stats``)."""
        return self.state.stats()

    def reset(self) -> None:
        """Drop indices, counters, faults and tasks; no round trip, no delays (``POST /_emulator/reset``)."""
        self.state.reset()

    def records(self, index: str) -> dict[str, Record]:
        """Copy of the published records of ``index`` as {objectID: record} (``GET /_emulator/indexes/{i}``)."""
        return self.state.records(index)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
