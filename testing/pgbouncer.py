"""A real PgBouncer (Debian's package) in front of the test server, in its own process on a free port.

PgBouncer refuses to run as root: as root it is started with `-u postgres` (or, for a server on a
Unix socket, `-u` the socket directory's owner), and its files are made readable to that user. Its
pool is small by default (`default_pool_size` 4), so that under transaction pooling the workers'
transactions really do move between server sessions.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import psycopg.conninfo

from testing.http import free_port


def pgbouncer_binary() -> str | None:
    """Where pgbouncer is, or None (`.ci/run` installs it)."""
    return shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)


def _run_as(server_url: str) -> str:
    """The user PgBouncer runs as when started as root (it refuses root): postgres, or for a server
    on a Unix socket the owner of its socket directory (the embedded server's is `pgserver`, and
    only its owner may enter it)."""
    host = str(psycopg.conninfo.conninfo_to_dict(server_url).get("host") or "")
    if host.startswith("/"):
        try:
            return pwd.getpwuid(os.stat(host).st_uid).pw_name
        except (OSError, KeyError):
            return "root"
    return "postgres"


def unreachable(server_url: str) -> str | None:
    """Why PgBouncer cannot reach `server_url`'s server from here, or None."""
    if os.geteuid() == 0 and _run_as(server_url) == "root":
        return "the server's Unix socket directory belongs to root, and PgBouncer refuses to run as root"
    return None


class Bouncer:
    """One running PgBouncer: `url(dsn)` is the same database and user through it."""

    def __init__(self, port: int, directory: Path, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.directory, self.proc = port, directory, proc

    def url(self, dsn: str) -> str:
        return psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=str(self.port))

    @property
    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text() if path.exists() else ""


@contextmanager
def pgbouncer(server_url: str, mode: str, pool_size: int = 4, users: tuple[str, ...] = ()) -> Iterator[Bouncer]:
    """PgBouncer in `mode` (transaction or session) for every database of `server_url`'s server, with
    `pool_size` server connections per database and user, trusting `server_url`'s user and `users`."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer; .ci/run does)")
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    host, port = str(info.get("host") or "127.0.0.1"), str(info.get("port") or "5432")
    user = str(info.get("user") or "postgres")
    directory = Path(tempfile.mkdtemp(prefix="workerpool-pgbouncer-"))
    listen = free_port()
    (directory / "users.txt").write_text("".join(f'"{u}" ""\n' for u in (user, *users)))
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
pool_mode = {mode}
default_pool_size = {pool_size}
min_pool_size = 0
max_client_conn = 500
max_db_connections = 0
server_lifetime = 3600
query_wait_timeout = 60
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
"""
    )
    command = [binary, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        os.chmod(directory, 0o777)
        for path in directory.iterdir():
            os.chmod(path, 0o666)
        command[1:1] = ["-u", _run_as(server_url)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = Bouncer(listen, directory, proc)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                psycopg.connect(bouncer.url(server_url), connect_timeout=2).close()
                break
            except psycopg.Error:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr and proc.poll() is not None else ""
                    raise RuntimeError(f"pgbouncer did not start: {err} {bouncer.log[-2000:]}") from None
                time.sleep(0.1)
        yield bouncer
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
