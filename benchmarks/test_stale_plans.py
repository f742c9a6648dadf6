"""Drains right after `VACUUM ANALYZE` of an empty queue, as autovacuum or a nightly job leaves it: the
workers' PL/pgSQL statements are planned with the statistics of an empty queue and then run against
100,000 rows. Six drains of 100,000 changes (BATCH_SIZE 1000, 2 workers) in one session; the slowest
must stay within 2x the median (a plan that scans the queue once per row stalled one drain in six for a
minute). Writes `benchmarks/results/stale_plans.json` (long form only).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import psycopg
import pytest

from benchmarks import _bench
from benchmarks._bench import bench_overrides
from benchmarks._drain import run_drain
from testing import queue_counts

ROWS = 500 if _bench.SMOKE else _bench._int("WORKERPOOL_BENCH_STALE_ROWS", 100_000)
DRAINS = 2 if _bench.SMOKE else _bench._int("WORKERPOOL_BENCH_STALE_DRAINS", 6)
BATCH = 1000
WORKERS = 2
HERE = Path(__file__).resolve().parent


@pytest.mark.timeout(3600)
def test_drains_after_vacuum_analyze_of_an_empty_queue_do_not_stall(benchmark, products_db, emulator, start_pool):
    url = products_db(ROWS)
    overrides = bench_overrides(url)
    points: list[dict] = []

    def run_all() -> None:
        run_drain(start_pool, overrides, BATCH, WORKERS, _bench.DEFAULT_POOL, expected=ROWS)  # the first sync
        for n in range(1, DRAINS + 1):
            with psycopg.connect(url, autocommit=True) as conn:
                assert queue_counts(conn) == {}
                conn.execute("VACUUM ANALYZE algolia_sync_queue, algolia_sync_inbox, algolia_sync_hashes")
                conn.execute("UPDATE products SET price = price + 1")  # ROWS changes, captured
            result = run_drain(start_pool, overrides, BATCH, WORKERS, _bench.DEFAULT_POOL, expected=ROWS)
            points.append(
                {"drain": n, "seconds": round(result["seconds"], 2), "records_per_s": result["records_per_s"]}
            )

    benchmark.group = "stale plans"
    benchmark.pedantic(run_all, rounds=1, iterations=1)
    seconds = [p["seconds"] for p in points]
    median = statistics.median(seconds)
    ratio = round(max(seconds) / median, 2)
    benchmark.extra_info.update({"points": points, "slowest_over_median": ratio, "target_ratio": 2.0})
    print(f"\n{DRAINS} drains of {ROWS:,} changes after VACUUM ANALYZE (BATCH_SIZE {BATCH}, {WORKERS} workers)")
    print("seconds: " + ", ".join(f"{s:.2f}" for s in seconds) + f"; slowest / median {ratio}")
    if not _bench.SMOKE:
        (HERE / "results" / "stale_plans.json").write_text(json.dumps(benchmark.extra_info, indent=2) + "\n")
        assert ratio <= 2.0, f"a drain stalled: {seconds}"
