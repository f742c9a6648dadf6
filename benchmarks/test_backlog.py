"""Requests per 1,000 records under a deep backlog: `workerpool run --drain` (2 workers, BATCH_SIZE 100)
drains the same queued products table with the default BATCH_SIZE_MAX (claims double while they come
back full, up to 1000) and with BATCH_SIZE_MAX = BATCH_SIZE (every claim 100 rows), side by side in one
session, rounds interleaved. The emulator counts the batch requests (`emulator.stats()`).

Guards against claims that stop growing under a backlog (requests per 1,000 records back at
1000 / BATCH_SIZE) and against growth that costs drain rate. Writes `benchmarks/results/backlog.json`
(long form only).
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

ROWS = 500 if _bench.SMOKE else _bench._int("WORKERPOOL_BENCH_BACKLOG_ROWS", 50_000)
BATCH = 100
WORKERS = 2
# BATCH_SIZE_MAX of each configuration: None is the default (unset).
CONFIGS: dict[str, str | None] = {"default (BATCH_SIZE_MAX 1000)": None, "BATCH_SIZE_MAX = BATCH_SIZE": str(BATCH)}
HERE = Path(__file__).resolve().parent


@pytest.mark.timeout(3600)
def test_requests_per_1000_records_under_a_deep_backlog(benchmark, products_db, emulator, start_pool):
    points: list[dict] = []

    def run_all() -> None:
        for round_ in range(1, _bench.REPEAT + 1):
            for label, top in CONFIGS.items():
                url = products_db(ROWS)
                emulator.reset()
                overrides = bench_overrides(url) | ({"BATCH_SIZE_MAX": top} if top else {})
                result = run_drain(start_pool, overrides, BATCH, WORKERS, _bench.DEFAULT_POOL, expected=ROWS)
                stats = emulator.stats()
                assert stats["indices"].get("products") == ROWS, stats
                with psycopg.connect(url, autocommit=True) as conn:
                    assert queue_counts(conn) == {}
                points.append(
                    {
                        "config": label,
                        "batch_size": BATCH,
                        "batch_size_max": int(top) if top else 1000,
                        "round": round_,
                        "rows": ROWS,
                        "requests": stats["batch_requests"],
                        "requests_per_1000_records": round(1000 * stats["batch_requests"] / ROWS, 2),
                        "batches": result["batches"],
                        "mean_batch": round(ROWS / result["batches"], 1),
                        "records_per_s": result.get("records_per_s_in_workers", result["records_per_s"]),
                    }
                )

    benchmark.group = "backlog"
    benchmark.pedantic(run_all, rounds=1, iterations=1)
    summary = []
    for label in CONFIGS:
        mine = [p for p in points if p["config"] == label]
        summary.append(
            {
                "config": label,
                "requests_per_1000_records": statistics.median(p["requests_per_1000_records"] for p in mine),
                "mean_batch": statistics.median(p["mean_batch"] for p in mine),
                "records_per_s": statistics.median(p["records_per_s"] for p in mine),
            }
        )
    benchmark.extra_info.update({"points": points, "summary": summary})
    print(f"\n{ROWS:,} rows, BATCH_SIZE {BATCH}, {WORKERS} workers, medians of {_bench.REPEAT} round(s)")
    print("config                          requests/1000  mean batch  records/s")
    for p in summary:
        per_1000, mean, rate = p["requests_per_1000_records"], p["mean_batch"], p["records_per_s"]
        print(f"{p['config']:31} {per_1000:13.2f} {mean:11.1f} {rate:10.0f}")
    grown, fixed = summary
    # Claims of 100 rows make at least 10 requests per 1,000 records, whatever the size of the drain.
    assert fixed["requests_per_1000_records"] >= 10, fixed
    if not _bench.SMOKE:  # the smoke form's 500 rows are too few for the claims to grow far
        assert grown["requests_per_1000_records"] < fixed["requests_per_1000_records"] / 2, summary
    if not _bench.SMOKE:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "backlog.json").write_text(
            json.dumps({"rows": ROWS, "repeat": _bench.REPEAT, "summary": summary, "points": points}, indent=1) + "\n"
        )
