"""A TCP proxy of the tests' own in front of the emulator, for failures the emulator cannot play
itself: connections refused (nothing listens on the port) and connections reset (accepted, then
closed with an RST). In `pass` mode it forwards bytes both ways, unchanged. Loopback only."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from typing import Literal

from testing.netpartition import pipe

Mode = Literal["pass", "refuse", "reset"]


class FaultProxy:
    """`FaultProxy(target_port).start()`; `.url` for ALGOLIA_HOSTS; `.mode = "refuse"` and so on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = _free_port()
        self._mode: Mode = "pass"
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._open: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mode(self) -> Mode:
        return self._mode

    @mode.setter
    def mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
            if mode != "pass":  # connections already open fail too, as they would in an outage
                for conn in self._open:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
                self._open.clear()
            if mode == "refuse":
                self._close_listener()  # nothing listens: connect() is refused
            elif self._listener is None:
                self._listen()

    def start(self) -> FaultProxy:
        with self._lock:
            self._listen()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            self._close_listener()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _close_listener(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None

    def _accept(self, listener: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            if self._mode == "reset":
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
        except OSError:
            client.close()
            return
        with self._lock:
            self._open += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
