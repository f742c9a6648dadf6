"""A second "host" for the tests: a Linux network namespace joined to this one by a veth pair, TCP
relays that let it reach Postgres and the emulator (both listen on loopback only), and a partition
that silently drops every packet to it, the way a failed switch or a cloud network split does
(no reset, no error: replies just never arrive). Also a namespace with nothing but its own loopback,
where no server of this machine answers. Needs root and iproute2 (`ip`)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import uuid


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def unavailable() -> str | None:
    """Why a namespace cannot be made here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        probe = f"wpprobe{uuid.uuid4().hex[:6]}"
        if _ip("netns", "add", probe, check=False).returncode != 0:
            return "`ip netns add` is refused here"
        _ip("netns", "del", probe, check=False)
    except FileNotFoundError:
        return "iproute2 (`ip`) is not installed"
    return None


class Relay:
    """Accepts TCP connections on (host, port 0) and pipes each to `target`: ("host", port) over TCP,
    or a Unix socket path (an embedded Postgres)."""

    def __init__(self, listen_host: str, target: tuple[str, int] | str) -> None:
        self.target = target
        self.sock = socket.create_server((listen_host, 0))
        self.port = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{self.port}").start()

    def _connect(self) -> socket.socket:
        if isinstance(self.target, str):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.target)
            return s
        return socket.create_connection(self.target)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = self._connect()
            except OSError:
                client.close()
                continue
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    def close(self) -> None:
        self.sock.close()
        for s in self._open:
            s.close()


class Isolated:
    """A namespace with only its own loopback up: nothing of this host's network is reachable from
    inside (no Postgres on 127.0.0.1:5432, no other host), as on a machine that runs no server."""

    def __init__(self) -> None:
        self.name = f"wpi{uuid.uuid4().hex[:6]}"
        _ip("netns", "add", self.name)
        try:
            _ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @property
    def prefix(self) -> list[str]:
        """Run a command inside: `[*ns.prefix, cmd, ...]`."""
        return ["ip", "netns", "exec", self.name]

    def close(self) -> None:
        _ip("netns", "del", self.name, check=False)

    def __enter__(self) -> Isolated:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Namespace(Isolated):
    """A namespace `name` at `peer_ip`, reachable from here at `host_ip`."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name, self.host_dev, self.peer_dev = f"wp{tag}", f"wph{tag}", f"wpn{tag}"
        octet = 16 + os.getpid() % 200  # a /30 of 10.213.x.0 per test run, so parallel runs don't meet
        self.host_ip, self.peer_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
        self.partitioned = False
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_dev, "type", "veth", "peer", "name", self.peer_dev)
            _ip("link", "set", self.peer_dev, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_dev)
            _ip("link", "set", self.host_dev, "up")
            for cmd in (
                ("addr", "add", f"{self.peer_ip}/30", "dev", self.peer_dev),
                ("link", "set", self.peer_dev, "up"),
                ("link", "set", "lo", "up"),
            ):
                _ip("netns", "exec", self.name, "ip", *cmd)
        except BaseException:
            self.close()
            raise

    def partition(self) -> None:
        """Every packet from this side to the namespace is dropped, silently."""
        _ip("route", "add", "blackhole", f"{self.peer_ip}/32")
        self.partitioned = True

    def heal(self) -> None:
        if self.partitioned:
            _ip("route", "del", "blackhole", f"{self.peer_ip}/32", check=False)
            self.partitioned = False

    def close(self) -> None:
        self.heal()
        _ip("netns", "del", self.name, check=False)
        _ip("link", "del", self.host_dev, check=False)  # normally gone with the namespace's end


def pipe(src: socket.socket, dst: socket.socket) -> None:
    """Copy bytes from `src` to `dst` until either side closes, then shut both down."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
