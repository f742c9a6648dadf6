"""Idle latency: one committed change to a watched table until its record is in the emulator, with a
running `workerpool run` whose workers are idle (POLLING_INTERVAL 5000, so only the trigger's NOTIFY
makes this fast). The clock starts before the autocommit INSERT is sent (so it includes the commit)
and stops when the emulator has applied the batch holding that record: a hook on the in-process
emulator's state signals it, so nothing polls and nothing competes with the emulator for the GIL."""

from __future__ import annotations

import random
import statistics
import threading
import time

import pytest

from benchmarks import _bench
from benchmarks._bench import bench_overrides, percentile
from testing import wait_until
from workerpool.capture.triggers import watch

LATENCY_WORKERS = [1] if not _bench.FULL else [1, 2, 4]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("workers", LATENCY_WORKERS, ids=[f"workers{w}" for w in LATENCY_WORKERS])
def test_idle_latency(benchmark, workers, db, db_url, emulator, start_pool):
    changes, warmup = _bench.LATENCY_CHANGES, 3
    _bench.create_products(db, "products_src")
    _bench.fill_products(db, changes + warmup, "products_src")
    _bench.create_products(db, "products")
    watch(db, "products", "products")

    start_pool("--workers", str(workers), extra_env=bench_overrides(db_url))
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'workerpool:listen-%%' AND state = 'idle'"
            ).fetchone()[0]
            >= workers
        ),
        timeout=30,
        message="every worker LISTENing",
    )

    state = emulator.state
    original = state.apply_batch
    seen: dict[str, float] = {}
    wanted: list[str | None] = [None]
    arrived = threading.Event()

    def hooked(*args, **kwargs):
        result = original(*args, **kwargs)
        now = time.perf_counter()
        for oid in result[1]:
            seen.setdefault(oid, now)
        if wanted[0] in result[1]:
            arrived.set()
        return result

    state.apply_batch = hooked  # an instance attribute: the emulator's endpoints call state.apply_batch
    latencies: list[float] = []
    rng = random.Random(7)

    def one(key: int) -> float:
        oid = str(key)
        wanted[0] = oid
        arrived.clear()
        t0 = time.perf_counter()
        db.execute("INSERT INTO products SELECT * FROM products_src WHERE id = %s", (key,), prepare=True)
        if not arrived.wait(15):
            raise AssertionError(f"record {oid} not in the index after 15 s")
        assert state.get_object("products", oid) is not None
        return seen[oid] - t0

    def run() -> None:
        for key in range(1, warmup + 1):
            one(key)
            time.sleep(0.1)
        for key in range(warmup + 1, warmup + changes + 1):
            latencies.append(one(key))
            time.sleep(0.05 + rng.random() * 0.05)  # let the worker go back to waiting on LISTEN

    try:
        benchmark.group = "latency"
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        del state.apply_batch
    ms = [x * 1000 for x in latencies]
    benchmark.extra_info.update(
        {
            "changes": changes,
            "workers": workers,
            "polling_interval_ms": 5000,
            "p50_ms": round(percentile(ms, 50), 2),
            "p95_ms": round(percentile(ms, 95), 2),
            "p99_ms": round(percentile(ms, 99), 2),
            "max_ms": round(max(ms), 2),
            "min_ms": round(min(ms), 2),
            "mean_ms": round(statistics.fmean(ms), 2),
            "target_p50_ms": 50,
        }
    )
