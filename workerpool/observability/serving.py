"""The health server's guards: which Host headers the dashboard answers, and a threading HTTP server
that serves a bounded number of connections (`health` uses both)."""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any

IDLE_TIMEOUT_S = 10.0  # a connection silent this long (no request, or a request cut half-way) is closed
MAX_CONNECTIONS = 64  # served at once; more are closed at once instead of each holding a thread


def host_allowed(header: str | None, health_host: str) -> bool:
    """Whether a request's Host header names this server as no rebound DNS name can: an IP address
    (with or without a port), `localhost`, this host's name, or HEALTH_HOST."""
    from workerpool.logs import host_name

    if not header:
        return False
    host = header.strip().lower()
    if host.startswith("["):  # [v6]:port
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    names = {"localhost", socket.gethostname().lower(), host_name().lower(), health_host.lower()}
    return host.rstrip(".") in names


class BoundedServer(ThreadingHTTPServer):
    """One thread per connection, at most MAX_CONNECTIONS of them: past that a connection is closed
    at once."""

    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()
