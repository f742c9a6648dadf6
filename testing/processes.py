"""Running `workerpool` as the tests do: real processes, their output kept, killed at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def workerpool_cmd(*args: str) -> list[str]:
    """The command line of `workerpool ARGS` with this interpreter."""
    return [sys.executable, "-m", "workerpool", *args]


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 120, cwd: str | None = None
) -> subprocess.CompletedProcess:
    """Run one `workerpool` command to completion."""
    return subprocess.run(
        workerpool_cmd(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or tempfile.gettempdir(),
    )


class Pool:
    """A `workerpool run` supervisor running in the background, its output kept in a file."""

    def __init__(self, env: dict[str, str], *args: str, cwd: str | None = None, prefix: Sequence[str] = ()) -> None:
        # `prefix` runs the command through another, e.g. `ip netns exec NAME` (which execs in place).
        # Left open for the process's lifetime and kept on disk afterwards for `output`.
        self.log_file = tempfile.NamedTemporaryFile(prefix="workerpool-run-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*prefix, *workerpool_cmd("run", *args)],
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd or tempfile.gettempdir(),
            start_new_session=True,
        )

    @property
    def output(self) -> str:
        return Path(self.log_file.name).read_text()

    def lines(self, action: str) -> list[dict[str, Any]]:
        import orjson

        found = []
        for line in self.output.splitlines():
            if line.startswith("{"):
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if event.get("action") == action:
                    found.append(event)
        return found

    def worker_pids(self) -> list[int]:
        """Pids of live worker processes of this supervisor."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise

    def kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def drain(
    env: dict[str, str], *args: str, extra_env: dict[str, str] | None = None, rows_fail: bool = False
) -> subprocess.CompletedProcess:
    """Run the pool until nothing is pending or processing; fail the test unless it exits 0, or 5 (rows
    went to failed during the run) when `rows_fail`."""
    result = run_cli({**env, **(extra_env or {})}, "run", "--drain", *args, timeout=240)
    assert result.returncode == (5 if rows_fail else 0), result.stdout[-3000:] + result.stderr[-3000:]
    return result


def wait_until(predicate: Callable[[], Any], timeout: float = 30, interval: float = 0.1, message: str = "") -> Any:
    """Poll predicate until it returns something true (returned), or fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)
