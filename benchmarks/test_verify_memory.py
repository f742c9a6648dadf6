"""Peak memory and rate of `workerpool reindex --atomic` and `workerpool verify` as the catalogue grows.

For each size, a fresh database holds a watched `products` table of N realistic rows (the drain's
data set, nothing queued). `reindex products --atomic` builds the index in the emulator from nothing,
then `verify products` compares it with the table and must find it clean (exit 0). Each command is a
real CLI subprocess; its peak RSS is the kernel's own figure (`ru_maxrss` from `wait4`, by a small
parent started for it: the largest of the command and the processes it started), with each process's
own high-water mark and their sum beside it (verify browses the index in a child process); its
rate the rows over the whole command's wall time (start-up included).

Sizes: WORKERPOOL_BENCH_VERIFY_ROWS (comma-separated), else 3,000 in the smoke form, 100,000 by
default and 100,000 + 1,000,000 with WORKERPOOL_BENCH_FULL; 5,000,000 is opt-in
(WORKERPOOL_BENCH_VERIFY_ROWS=100000,1000000,5000000). No target is asserted here: the README's
figures compare the sizes (peak at 1,000,000 within 1.2x of 100,000 and under 200 MB).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from benchmarks import _bench
from benchmarks._bench import CpuSnapshot, bench_overrides
from testing import with_dbname, workerpool_cmd
from testing.pg import create_database, drop_database
from workerpool.capture.triggers import watch

VERIFY_ROWS = _bench._ints(
    "WORKERPOOL_BENCH_VERIFY_ROWS", [3000] if _bench.SMOKE else ([100_000, 1_000_000] if _bench.FULL else [100_000])
)


# Runs the command as its own child and reports that child's rusage. The command is not started
# from pytest directly: a child forked (or vforked) from a process carries that process's RSS
# high-water mark across exec, so ru_maxrss would be the pytest process's (emulator included). This
# small parent's own high-water mark is far below any workerpool command's.
#
# `wait4`'s ru_maxrss is the largest high-water mark of the command and the descendants it waited
# for (verify's index reader process), not their sum. So the parent also reads every process of the
# tree's own high-water mark (VmHWM) every 50 ms while it runs: `own_kb` for the command, `children_kb`
# for each descendant (the last figure read before it ended), and their sum, an upper bound of
# what the tree held at once.
_MEASURE = """
import json, os, sys, time
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])

def tree(p):
    try:
        with open(f"/proc/{p}/task/{p}/children") as f:
            kids = [int(c) for c in f.read().split()]
    except OSError:
        return []
    return [k for c in kids for k in [c, *tree(c)]]

def hwm(p):
    try:
        with open(f"/proc/{p}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None

peaks = {}
while True:
    done, status, ru = os.wait4(pid, os.WNOHANG)
    if done:
        break
    for p in [pid, *tree(pid)]:
        kb = hwm(p)
        if kb is not None:
            peaks[p] = max(peaks.get(p, 0), kb)
    time.sleep(0.05)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kb": ru.ru_maxrss, "cpu_s": ru.ru_utime + ru.ru_stime, "own_kb": peaks.get(pid, 0),
               "children_kb": [kb for p, kb in peaks.items() if p != pid]}, f)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(env: dict[str, str], *args: str, timeout: float) -> dict[str, Any]:
    """Run one `workerpool` command to completion: exit code, wall time, peak RSS (the kernel's, and
    each process of its tree as sampled) and CPU (its descendants included)."""
    before = CpuSnapshot.take()
    with tempfile.TemporaryDirectory() as tmp:
        usage_file = os.path.join(tmp, "usage.json")
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, usage_file, *workerpool_cmd(*args)[1:]],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.perf_counter() - started
        with open(usage_file) as f:
            usage = json.load(f)
    spent = CpuSnapshot.take().since(before, "cpu_children_s")
    return {
        "exit": proc.returncode,
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage["maxrss_kb"] / 1024, 1),
        "own_peak_rss_mb": round(usage["own_kb"] / 1024, 1),
        "children_peak_rss_mb": [round(kb / 1024, 1) for kb in usage["children_kb"]],
        "tree_peak_rss_mb": round((usage["own_kb"] + sum(usage["children_kb"])) / 1024, 1),
        "cpu_cli_s": round(usage["cpu_s"], 2),
        "cpu_emulator_s": spent["cpu_emulator_s"],
        "cpu_postgres_s": spent.get("cpu_postgres_s"),
    }


@pytest.fixture
def catalogue(pg_server: str, template_db: str) -> Iterator[Callable[[int], str]]:
    """`catalogue(rows)`: the URL of a fresh database with a watched, vacuumed `products` of N rows."""
    made: list[str] = []

    def make(rows: int) -> str:
        name = f"{template_db}_v{rows}_{uuid.uuid4().hex[:8]}"
        create_database(pg_server, name, template=template_db)
        made.append(name)
        url = with_dbname(pg_server, name)
        with psycopg.connect(url, autocommit=True) as conn:
            _bench.create_products(conn)
            _bench.fill_products(conn, rows)
            watch(conn, "products", "products")
            conn.execute("VACUUM ANALYZE products")
        _bench.checkpoint(pg_server)
        return url

    yield make
    for name in made:
        drop_database(pg_server, name)


@pytest.mark.timeout(14400)
@pytest.mark.parametrize("rows", VERIFY_ROWS, ids=[f"rows{n}" for n in VERIFY_ROWS])
def test_verify_and_atomic_reindex_memory(benchmark, rows, catalogue, env, emulator):
    url = catalogue(rows)
    cli_env = {**env, **bench_overrides(url)}
    timeout = 600 + rows / 500  # generous: the machine is shared
    result: dict[str, Any] = {}

    def both() -> None:
        result["reindex"] = run_measured(cli_env, "reindex", "products", "--atomic", timeout=timeout)
        result["verify"] = run_measured(cli_env, "verify", "products", timeout=timeout)

    benchmark.group = "verify-memory"
    benchmark.pedantic(both, rounds=1, iterations=1)
    reindexed, verified = result["reindex"], result["verify"]
    assert reindexed["exit"] == 0, reindexed["stderr"][-2000:]
    assert emulator.stats()["indices"].get("products") == rows
    assert verified["exit"] == 0 and "clean" in verified["stdout"], verified["stdout"] + verified["stderr"][-2000:]
    info: dict[str, Any] = {
        "rows": rows,
        "max_rss_self_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    for name, r in result.items():
        info[name] = {k: v for k, v in r.items() if k not in ("stdout", "stderr")}
        info[name]["rows_per_s"] = round(rows / r["wall_s"])
    benchmark.extra_info.update(info)
    print(
        f"\n{rows:,} rows: reindex --atomic {info['reindex']['rows_per_s']:,} rows/s, "
        f"peak {info['reindex']['peak_rss_mb']} MB; verify {info['verify']['rows_per_s']:,} rows/s, "
        f"peak {info['verify']['peak_rss_mb']} MB (own {info['verify']['own_peak_rss_mb']}, index reader "
        f"{info['verify']['children_peak_rss_mb']}, tree {info['verify']['tree_peak_rss_mb']} MB)"
    )
