"""The shipped pm2.config.json under the real PM2 (from npm; `bash .ci/run` installs it into .tools/).

Each test runs its own PM2 daemon with a private PM2_HOME in a temporary directory, so a user's PM2
is never touched, against a real test database and the emulator. What PM2 says (`pm2 jlist`: status,
pid) is checked against the processes themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from testing import ROOT, assert_index_matches, queue_counts, wait_until

pytestmark = pytest.mark.slow


def _pm2_binary() -> str | None:
    local = ROOT / ".tools" / "node_modules" / ".bin" / "pm2"
    return str(local) if local.is_file() else shutil.which("pm2")


PM2 = _pm2_binary()
if PM2 is None:
    pytest.skip(
        "pm2 is not installed: `bash .ci/run` installs it (npm install --prefix .tools pm2@7)", allow_module_level=True
    )


class Pm2:
    """The `pm2` command line against one private daemon."""

    def __init__(self, environ: dict[str, str]) -> None:
        # A short path: PM2's Unix sockets live in PM2_HOME (at most 107 bytes for a socket path).
        self.home = tempfile.mkdtemp(prefix="wp-pm2-", dir="/tmp")
        self.environ = {**environ, "PM2_HOME": self.home}
        self.seen_pids: set[int] = set()

    def __call__(
        self, *args: str, cwd: Path | str, environ: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [PM2, *args],
            cwd=cwd,
            env={**self.environ, **(environ or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, (
            f"pm2 {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )
        return result

    def jlist(self, name: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [PM2, "jlist"], env=self.environ, capture_output=True, text=True, timeout=60, cwd=self.home
        ).stdout
        listing = [line for line in out.splitlines() if line.startswith("[{") or line == "[]"]  # past any banner
        assert listing, out
        apps = [a for a in json.loads(listing[-1]) if a["name"] == name]
        self.seen_pids.update(a["pid"] for a in apps if a.get("pid"))
        return apps

    def log(self, name: str) -> str:
        path = Path(self.home) / "logs" / f"{name}-out.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        subprocess.run([PM2, "kill"], env=self.environ, capture_output=True, timeout=120, cwd=self.home)
        for pid in self.seen_pids:  # anything PM2 failed to stop
            try:
                os.killpg(pid, signal.SIGKILL) if os.getpgid(pid) == pid else os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture
def pm2_env(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """PM2's environment: PATH and HOME, nothing of the test run's settings."""
    yield {k: v for k, v in env.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _assert_online_supervisors(pm2: Pm2, name: str, instances: int, workers: int) -> list[int]:
    """PM2 says `online` with a pid for every instance, and each pid is a live workerpool supervisor,
    a child of this PM2 daemon, with its worker processes; returns the pids."""
    daemon = int((Path(pm2.home) / "pm2.pid").read_text())

    def ready() -> list[dict[str, Any]] | None:
        apps = pm2.jlist(name)
        if (
            len(apps) == instances
            and all(a["pm2_env"]["status"] == "online" and a.get("pid") for a in apps)
            and all(len(_children(a["pid"])) == workers for a in apps)
        ):
            return apps
        return None

    apps = wait_until(ready, timeout=60, interval=0.5, message=f"{instances} online {name} supervisor(s)")
    pids = [a["pid"] for a in apps]
    for pid in pids:
        assert _alive(pid), pid
        assert _cmdline(pid).startswith("workerpool: supervisor"), _cmdline(pid)
        assert int(Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[1]) == daemon
        for child in _children(pid):
            assert _cmdline(child).startswith("workerpool: worker"), _cmdline(child)
    return pids


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _insert(conn: psycopg.Connection, n: int, name: str = "p") -> None:
    conn.execute(
        "INSERT INTO products (name, price, stock) SELECT %s || g, g, g FROM generate_series(1, %s) g", (name, n)
    )


def _processing(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM algolia_sync_queue WHERE status = 'processing'").fetchone()[0]


def _drained(conn: psycopg.Connection) -> bool:
    return not queue_counts(conn)


def test_pm2_from_a_deploy_directory_starts_syncs_stops_gracefully_restarts_and_reloads(
    tmp_path, products, env, emulator, pm2_env
):
    # A deploy directory as the README describes: the virtualenv in .venv, pm2.config.json beside it,
    # secrets in .env (not in PM2's environment). The env block is the operator's to tune: a free
    # health port and a shorter SHUTDOWN_TIMEOUT, kill_timeout still above it.
    if not (Path(sys.prefix) / "bin" / "workerpool").is_file():
        pytest.skip(f"no workerpool executable in {sys.prefix}/bin for the deploy directory's .venv (pip install -e .)")
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    (deploy / ".venv").symlink_to(Path(sys.prefix))
    config = json.loads((ROOT / "pm2.config.json").read_text())
    app = next(a for a in config["apps"] if a["name"] == "workerpool")
    app["env"].update(
        HEALTH_PORT=str(_free_port()), SHUTDOWN_TIMEOUT="10000", POLLING_INTERVAL="500", LEASE_TIMEOUT="30000"
    )
    assert app["kill_timeout"] > 10000
    (deploy / "pm2.config.json").write_text(json.dumps(config))
    (deploy / ".env").write_text(
        "".join(f"{k}={env[k]}\n" for k in ("DATABASE_URL", "ALGOLIA_APP_ID", "ALGOLIA_ADMIN_KEY", "ALGOLIA_HOSTS"))
    )
    workers = int(app["env"]["WORKERS"])

    pm2 = Pm2(pm2_env)
    try:
        pm2("start", "pm2.config.json", "--only", "workerpool", cwd=deploy)
        first = _assert_online_supervisors(pm2, "workerpool", 1, workers)
        assert Path(pm2.jlist("workerpool")[0]["pm2_env"]["pm_exec_path"]) == deploy / ".venv" / "bin" / "workerpool"
        _insert(products, 200)
        wait_until(lambda: len(emulator.records("products")) == 200, timeout=60, message="200 records synced")

        # Stop while batches are in flight (every Algolia write takes 1.5 s): nothing is left processing.
        emulator.inject_fault(latency_ms=1500, writes_only=True)
        _insert(products, 400, "q")
        wait_until(lambda: _processing(products) > 0, timeout=30, message="a batch in flight")
        pm2("stop", "workerpool", cwd=deploy)
        [stopped] = pm2.jlist("workerpool")
        assert stopped["pm2_env"]["status"] == "stopped" and not stopped.get("pid"), stopped
        assert not _alive(first[0])
        assert _processing(products) == 0
        log = pm2.log("workerpool")
        assert '"stopping"' in log and '"signal": "sigint"' in log.replace('"signal":"sigint"', '"signal": "sigint"')
        assert '"exit_code": 0' in log.split('"supervisor_stopped"')[-1][:200].replace(
            '"exit_code":0', '"exit_code": 0'
        )
        emulator.clear_faults()

        # Restart: a new supervisor picks up what the stop left pending.
        pm2("restart", "workerpool", cwd=deploy)
        second = _assert_online_supervisors(pm2, "workerpool", 1, workers)
        assert second != first
        wait_until(lambda: _drained(products), timeout=90, message="the queue drained after restart")
        assert_index_matches(products, emulator, "products", "products")

        # Reload while the application keeps writing: nothing is lost, nothing is stale.
        stop_writing = threading.Event()

        def writer() -> None:
            with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
                while not stop_writing.is_set():
                    _insert(conn, 5, "r")
                    conn.execute(
                        "UPDATE products SET stock = stock + 1 WHERE id IN "
                        "(SELECT id FROM products ORDER BY random() LIMIT 5)"
                    )
                    time.sleep(0.05)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(1)
            pm2("reload", "workerpool", cwd=deploy)
            third = _assert_online_supervisors(pm2, "workerpool", 1, workers)
            assert third != second and not _alive(second[0])
            time.sleep(1)
        finally:
            stop_writing.set()
            thread.join()
        wait_until(lambda: _drained(products), timeout=90, message="the queue drained after reload")
        assert_index_matches(products, emulator, "products", "products")
        assert products.execute("SELECT count(*) FROM algolia_sync_queue WHERE status = 'failed'").fetchone()[0] == 0
        # PM2's own log: the stop and the reload each ended a supervisor with exit code 0 (the restart
        # started the stopped app), and nothing crashed in between.
        exits = re.findall(
            r"App \[workerpool:\d+\] exited with code \[(\d+)\]", (Path(pm2.home) / "pm2.log").read_text()
        )
        assert exits == ["0", "0"], exits
        logs = "".join(p.read_text(errors="replace") for p in Path(pm2.home).rglob("*.log"))
        assert '"batch_synced"' in logs and env["ALGOLIA_ADMIN_KEY"] not in logs
    finally:
        pm2.close()


def test_pm2_scaled_app_runs_from_the_repository_root_as_shipped(products, env, emulator, pm2_env):
    venv = ROOT / ".venv" / "bin" / "workerpool"
    if not venv.is_file():
        pytest.skip(f"{venv} does not exist: the README's install (and `bash .ci/run`) creates it")
    config = json.loads((ROOT / "pm2.config.json").read_text())
    app = next(a for a in config["apps"] if a["name"] == "workerpool-scaled")
    # The settings come from PM2's environment here, as they would from a shell that exported them.
    environ = {k: env[k] for k in ("DATABASE_URL", "ALGOLIA_APP_ID", "ALGOLIA_ADMIN_KEY", "ALGOLIA_HOSTS")}
    pm2 = Pm2(pm2_env)
    try:
        pm2("start", "pm2.config.json", "--only", "workerpool-scaled", cwd=ROOT, environ=environ)
        pids = _assert_online_supervisors(pm2, "workerpool-scaled", app["instances"], 1)
        assert len(set(pids)) == app["instances"]
        instances = sorted(int(a["pm2_env"]["WORKERPOOL_INSTANCE"]) for a in pm2.jlist("workerpool-scaled"))
        assert instances == list(range(app["instances"]))
        _insert(products, 300)
        wait_until(lambda: _drained(products), timeout=90, message="the queue drained")
        assert_index_matches(products, emulator, "products", "products")

        pm2("stop", "workerpool-scaled", cwd=ROOT)
        apps = pm2.jlist("workerpool-scaled")
        assert [a["pm2_env"]["status"] for a in apps] == ["stopped"] * app["instances"]
        assert not any(_alive(pid) for pid in pids)
        assert _processing(products) == 0
        assert pm2.log("workerpool-scaled").count('"supervisor_stopped"') == app["instances"]
    finally:
        pm2.close()
