"""`verify` side by side: one catalogue, one index, two or more checkouts run alternately (A B A B).

Not collected with the other benchmarks (run it by name). Each side is a directory holding a
checkout and its `.venv` (`git archive REV | tar -x -C DIR`; a `.venv` symlink to another checkout's
venv does: the command runs with the checkout as its working directory, so its own package is the one
imported). The catalogue is made and indexed (`reindex --atomic`, by the last side) once; then every
round runs `verify products` with each side in turn, measured as `test_verify_memory.py` measures it.

    VERIFY_AB=main=/tmp/main,new=/path/to/worktree VERIFY_AB_ROUNDS=2 WORKERPOOL_BENCH_VERIFY_ROWS=1000000 \\
        python -m pytest benchmarks/verify_ab.py -s -q

With VERIFY_AB_SPY=FILE it instead records one verify of this checkout with py-spy (raw stacks, child
processes included) into FILE.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytest

from benchmarks import test_verify_memory as vm
from benchmarks._bench import bench_overrides
from benchmarks.test_verify_memory import catalogue  # noqa: F401  (the fixture)

SIDES = [s.split("=", 1) for s in os.environ.get("VERIFY_AB", "").split(",") if s]
ROUNDS = int(os.environ.get("VERIFY_AB_ROUNDS", "2"))
ROWS = int(os.environ.get("WORKERPOOL_BENCH_VERIFY_ROWS", "100000"))


def run(checkout: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    """One `workerpool` command of `checkout`, under the measuring parent of test_verify_memory."""
    with tempfile.TemporaryDirectory() as tmp:
        usage = os.path.join(tmp, "usage.json")
        started = time.perf_counter()
        proc = subprocess.run(
            [os.path.join(checkout, ".venv/bin/python"), "-c", vm._MEASURE, usage, "-m", "workerpool", *args],
            env=env,
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        wall = time.perf_counter() - started
        with open(usage) as f:
            measured: dict[str, Any] = json.load(f)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    return {"wall_s": round(wall, 2), **measured}


@pytest.mark.timeout(14400)
def test_verify_side_by_side(catalogue, env, emulator):  # noqa: F811
    assert SIDES, "set VERIFY_AB=name=checkout,name=checkout"
    cli_env = {**env, **bench_overrides(catalogue(ROWS))}
    run(SIDES[-1][1], cli_env, "reindex", "products", "--atomic")
    if os.environ.get("VERIFY_AB_SPY"):
        spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        command = [sys.executable, "-m", "workerpool", "verify", "products"]
        record = [spy, "record", "-r", "250", "-f", "raw", "-o", os.environ["VERIFY_AB_SPY"], "--subprocesses"]
        subprocess.run([*record, "--", *command], env=cli_env, check=True, capture_output=True)
        return
    for round_ in range(1, ROUNDS + 1):
        for name, checkout in SIDES:
            u = run(checkout, cli_env, "verify", "products")
            tree_kb = u["own_kb"] + sum(u["children_kb"])
            print(
                f"\nround {round_} {name}: {ROWS / u['wall_s']:,.0f} rows/s ({u['wall_s']} s, CPU {u['cpu_s']:.1f} s); "
                f"peak RSS {u['maxrss_kb'] / 1024:.1f} MB (own {u['own_kb'] / 1024:.1f}, children "
                f"{[round(kb / 1024, 1) for kb in u['children_kb']]}, tree {tree_kb / 1024:.1f})",
                flush=True,
            )
