"""A private, short-lived Postgres cluster for what the shared server must not be reconfigured for:
`wal_level = logical` (logical slots), a streaming standby with `hot_standby_feedback`, prepared
transactions, autovacuum on (the benchmark machine's server runs with it off).

Built with the server binaries of the machine (initdb/pg_ctl from `pg_config --bindir` or
/usr/lib/postgresql/*/bin) in a temporary directory on a free port, with trust authentication on
127.0.0.1 only. initdb refuses to run as root: as root, the commands run as the `postgres` user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path


def bindir() -> Path | None:
    """The directory holding initdb and pg_ctl, or None when this machine has no server binaries."""
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
        if out:
            candidates.append(Path(out))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)]
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


def missing_reason() -> str | None:
    """Why a cluster cannot be made here (for a skip), or None."""
    if bindir() is None:
        return "no Postgres server binaries (initdb, pg_ctl): install postgresql"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root without a `postgres` user to run initdb as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One cluster: `start()` returns a URL of its `postgres` database as superuser `postgres`."""

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.settings = dict(settings or {})
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="workerpool-cluster-"))
        self.data = self.root / "data"
        self.started = False
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            os.chmod(self.root, 0o700)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, args: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
        return result

    def init(self) -> None:
        self._run(
            [
                str(bindir() / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )

    def configure(self, extra: Mapping[str, str] | None = None) -> None:
        """Append settings (this cluster's port and sockets first) to postgresql.conf."""
        conf = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            **self.settings,
            **(extra or {}),
        }
        lines = "".join(f"{k} = {v}\n" for k, v in conf.items())
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(lines)

    def start(self) -> str:
        if not (self.data / "PG_VERSION").exists():
            self.init()
            self.configure()
        self._run(
            [
                str(bindir() / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.root / f"log-{self.port}"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        self.started = True
        return self.url

    def standby(self, slot: str, settings: Mapping[str, str] | None = None) -> Cluster:
        """A streaming standby of this cluster through a new physical slot (pg_basebackup -C -S)."""
        replica = Cluster(settings)
        replica._run(
            [
                str(bindir() / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-D",
                str(replica.data),
                "-R",
                "-X",
                "stream",
                "-C",
                "-S",
                slot,
                "-c",
                "fast",
                "--no-sync",
            ]
        )
        replica.configure()
        replica.start()
        return replica

    def stop(self) -> None:
        if self.started:
            try:
                self._run([str(bindir() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"], timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
