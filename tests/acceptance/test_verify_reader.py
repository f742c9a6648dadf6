"""verify's index reader process (workerpool/ops/index_reader.py) goes when verify goes: killed with
its parent, and ended by Ctrl-C (exit 130, no traceback from either)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from testing import drain, workerpool_cmd


def _descendants(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return [d for c in children for d in (c, *_descendants(c))]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reader_of(cli: subprocess.Popen) -> int:
    """The pid of the index reader once it runs (its browse is held up by the emulator's latency)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in _descendants(cli.pid):
            command = _cmdline(pid)
            if "multiprocessing" in command and "resource_tracker" not in command:
                return pid
        time.sleep(0.05)
    raise AssertionError("no index reader process appeared")


def _slow_verify(products, env, emulator) -> subprocess.Popen:
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 5) g")
    drain(env)
    emulator.inject_fault(latency_ms=20_000, count=1)  # the reader's first browse page
    return subprocess.Popen(
        workerpool_cmd("verify", "products", "--no-wait-published"),  # the first request is the browse
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _gone(pid: int, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_index_reader_dies_with_a_killed_verify(products, env, emulator):
    cli = _slow_verify(products, env, emulator)
    try:
        reader = _reader_of(cli)
        cli.kill()
        cli.wait(10)
        assert _gone(reader), f"index reader {reader} outlived its killed parent"
    finally:
        if cli.poll() is None:
            cli.kill()
        emulator.clear_faults()


def test_ctrl_c_ends_verify_and_its_reader_without_a_traceback(products, env, emulator):
    cli = _slow_verify(products, env, emulator)
    try:
        reader = _reader_of(cli)
        time.sleep(0.5)
        os.killpg(cli.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        _, err = cli.communicate(timeout=30)
        assert _gone(reader), f"index reader {reader} outlived Ctrl-C"
        assert cli.returncode == 130 and "Traceback" not in err, (cli.returncode, err)
    finally:
        if cli.poll() is None:
            cli.kill()
        emulator.clear_faults()
