"""Drain rate against a far Algolia: the emulator holds every answer for a round trip (RTT 0, 60 and
200 ms, ±10% jitter) while `workerpool run --drain` (2 workers) drains the same products table at
BATCH_SIZE 100 and 1000, with the default REQUESTS_IN_FLIGHT and with 1 (one request at a time per
worker, the bound `workers x batch / RTT`). Every point runs in one session, interleaved, and is
reported as a ratio to the same configuration's RTT-0 rate measured alongside it.

Writes `benchmarks/results/rtt.json` and `benchmarks/rtt.png` (long form only).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import _bench
from benchmarks._bench import bench_overrides
from benchmarks._drain import run_drain
from testing import queue_counts

RTTS_MS = [0, 60] if _bench.SMOKE else [0, 60, 200]
BATCHES = [100] if _bench.SMOKE else [100, 1000]
IN_FLIGHT = _bench._ints("WORKERPOOL_BENCH_RTT_IN_FLIGHT", [8, 1])  # the default, and one request at a time
ROWS = 300 if _bench.SMOKE else _bench._int("WORKERPOOL_BENCH_RTT_ROWS", 20_000)
WORKERS = 2
HERE = Path(__file__).resolve().parent


@pytest.mark.timeout(3600)
def test_drain_rate_at_round_trip_times(benchmark, products_db, emulator, start_pool):
    points: list[dict] = []

    def run_all() -> None:
        for batch in BATCHES:
            for in_flight in IN_FLIGHT:
                for rtt in RTTS_MS:
                    url = products_db(ROWS)
                    emulator.reset()
                    emulator.set_rtt(rtt, rtt * 0.1)
                    overrides = {**bench_overrides(url), "REQUESTS_IN_FLIGHT": str(in_flight)}
                    result = run_drain(start_pool, overrides, batch, WORKERS, _bench.DEFAULT_POOL, expected=ROWS)
                    stats = emulator.stats()
                    assert stats["indices"].get("products") == ROWS, stats
                    import psycopg

                    with psycopg.connect(url, autocommit=True) as conn:
                        assert queue_counts(conn) == {}
                    points.append(
                        {
                            "rtt_ms": rtt,
                            "batch_size": batch,
                            "requests_in_flight": in_flight,
                            "rows": ROWS,
                            "records_per_s": result.get("records_per_s_in_workers", result["records_per_s"]),
                            "requests_per_1000_records": round(1000 * stats["batch_requests"] / ROWS, 2),
                        }
                    )
        emulator.set_rtt(0)

    benchmark.group = "rtt"
    benchmark.pedantic(run_all, rounds=1, iterations=1)
    for p in points:
        base = next(
            q
            for q in points
            if q["rtt_ms"] == 0
            and q["batch_size"] == p["batch_size"]
            and q["requests_in_flight"] == p["requests_in_flight"]
        )
        p["ratio_to_rtt0"] = round(p["records_per_s"] / base["records_per_s"], 3)
    benchmark.extra_info.update({"points": points})
    print("\nrtt_ms batch in_flight records/s ratio requests/1000")
    for p in points:
        print(
            f"{p['rtt_ms']:6} {p['batch_size']:5} {p['requests_in_flight']:9} {p['records_per_s']:9.0f} "
            f"{p['ratio_to_rtt0']:5.2f} {p['requests_per_1000_records']:8.1f}"
        )
    if not _bench.SMOKE:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "rtt.json").write_text(json.dumps(points, indent=1) + "\n")
        _plot(points, HERE / "rtt.png")


def _plot(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for batch in BATCHES:
        for in_flight in IN_FLIGHT:
            line = [p for p in points if p["batch_size"] == batch and p["requests_in_flight"] == in_flight]
            ax.plot(
                [p["rtt_ms"] for p in line],
                [p["records_per_s"] for p in line],
                marker="o",
                label=f"BATCH_SIZE {batch}, REQUESTS_IN_FLIGHT {in_flight}",
            )
    ax.set_xlabel("round-trip time to Algolia (ms)")
    ax.set_ylabel("records/s (2 workers)")
    ax.set_title("Drain rate against a far Algolia")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
