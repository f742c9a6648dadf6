"""Freshness: a steady offered load of single-row commits, and how long each takes to be accepted by
Algolia and to be searchable (published), at several commit rates, round-trip times and publish delays.

Four writer threads commit single-row INSERTs on a fixed schedule (open loop: a late commit does not
delay the next one's slot) for WORKERPOOL_BENCH_FRESHNESS_SECONDS; a running `workerpool run`
(2 workers, the defaults) syncs them into the in-process emulator, with `set_rtt` for a far region
and `set_publish_delay` for an index that applies writes late. Per record: commit (the INSERT's
return) -> accepted (the emulator's batch apply of that record) and commit -> searchable (its
task's `published_at` in the emulator's task log). p50/p95/p99 per point, a table in extra_info,
and `results/freshness.png`.

The tracking's own cost is measured side by side at the reference point (1,000 commits/s, no round
trip, no publish delay): TASK_TRACKING=0 (today's behaviour, nothing followed) against the default,
alternating, with the workers' CPU per record and commit -> accepted p99 of each.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from benchmarks import _bench
from benchmarks._bench import CpuSnapshot, bench_overrides, percentile
from testing import wait_until
from workerpool.capture.triggers import watch

SECONDS = float(os.environ.get("WORKERPOOL_BENCH_FRESHNESS_SECONDS", "1" if _bench.SMOKE else "8"))
RATES = _bench._ints("WORKERPOOL_BENCH_FRESHNESS_RATES", [200] if _bench.SMOKE else [250, 1000])
RTTS = _bench._ints("WORKERPOOL_BENCH_FRESHNESS_RTT", [0] if _bench.SMOKE else [0, 60, 200])
# (delay ms, ms per record): none, and an index that takes 100 ms per task plus 0.05 ms per record.
DELAYS = [(0.0, 0.0)] if _bench.SMOKE else [(0.0, 0.0), (100.0, 0.05)]
GRID = os.environ.get("WORKERPOOL_BENCH_FRESHNESS_GRID", "1") != "0"  # 0: only the tracking comparison
TRACKING_ROUNDS = _bench._int("WORKERPOOL_BENCH_FRESHNESS_ROUNDS", 1 if _bench.SMOKE else 3)
WRITERS = 4
RESULTS = Path(__file__).parent / "results"


def _points() -> list[tuple[int, int, tuple[float, float]]]:
    return [(r, rtt, d) for d in DELAYS for rtt in RTTS for r in RATES]


def _offer(url: str, rate: int, seconds: float, first_id: int) -> dict[int, float]:
    """Commit single-row INSERTs at `rate` per second from WRITERS threads; returns id -> commit time
    (time.time() when the autocommit INSERT returned)."""
    committed: dict[int, float] = {}
    lock = threading.Lock()
    n = int(rate * seconds)
    start = time.monotonic() + 0.2

    def writer(w: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for i in range(w, n, WRITERS):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                key = first_id + i
                conn.execute("INSERT INTO products (id, sku, name) VALUES (%s, 'SKU', 'bench')", (key,), prepare=True)
                done = time.time()
                with lock:
                    committed[key] = done

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return committed


def _figures(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {f"p{p}_ms": round(percentile(ms, p), 1) for p in (50, 95, 99)} | {"n": len(ms)}


class _Accepted:
    """Per objectID, when the emulator applied its batch (time.time()) and the taskID it got."""

    def __init__(self, emulator: Any) -> None:
        self.state = emulator.state
        self.original = self.state.apply_batch
        self.seen: dict[str, tuple[float, int]] = {}

    def __enter__(self) -> _Accepted:
        def hooked(*args: Any, **kwargs: Any) -> Any:
            result = self.original(*args, **kwargs)
            now, task = time.time(), result[0].get("products")
            for oid in result[1]:
                self.seen.setdefault(oid, (now, task))
            return result

        self.state.apply_batch = hooked
        return self

    def __exit__(self, *exc: object) -> None:
        del self.state.apply_batch


def _run_point(db, db_url, emulator, start_pool, rate, rtt, delay, first_id, tracking=None) -> dict[str, Any]:
    emulator.reset()
    emulator.set_rtt(rtt)
    emulator.set_publish_delay(*delay)
    env = bench_overrides(db_url) | ({"TASK_TRACKING": str(tracking)} if tracking is not None else {})
    before = CpuSnapshot.take()
    pool = start_pool("--workers", "2", extra_env=env)
    wait_until(
        lambda: (
            db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'workerpool:listen-%%'"
            ).fetchone()[0]
            >= 2
        ),
        timeout=30,
    )
    workers = pool.worker_pids()
    worker_cpu = sum(_bench.process_cpu_s(p) for p in workers)
    with _Accepted(emulator) as accepted:
        committed = _offer(db_url, rate, SECONDS, first_id)
        wait_until(lambda: all(str(k) in accepted.seen for k in committed), timeout=120, message="every commit sent")
    published: dict[int, float] = {}

    def all_published() -> bool:
        published.update(
            {t["task_id"]: t["published_at"] for t in emulator.task_log("products") if t["published_at"] is not None}
        )
        return all(accepted.seen[str(k)][1] in published for k in committed)

    wait_until(all_published, timeout=120, message="every task published")
    time.sleep(1.5)  # the trackers' last polls of tasks published meanwhile
    worker_cpu = sum(_bench.process_cpu_s(p) for p in workers) - worker_cpu
    assert pool.stop() == 0
    cpu = CpuSnapshot.take().since(before)
    to_accepted = [accepted.seen[str(k)][0] - t for k, t in committed.items()]
    to_searchable = [published[accepted.seen[str(k)][1]] - t for k, t in committed.items()]
    return {
        "rate": rate,
        "rtt_ms": rtt,
        "publish_delay_ms": delay[0],
        "publish_ms_per_record": delay[1],
        "commits": len(committed),
        "accepted": _figures(to_accepted),
        "searchable": _figures(to_searchable),
        "worker_cpu_us_per_record": round(worker_cpu / len(committed) * 1e6, 1),
        "pool_cpu_us_per_record": round(cpu["cpu_workerpool_s"] / len(committed) * 1e6, 1),
    }


@pytest.mark.timeout(3600)
def test_freshness(benchmark, db, db_url, emulator, start_pool):
    _bench.create_products(db)
    watch(db, "products", "products")
    rows: list[dict[str, Any]] = []
    next_id = [1]

    def point(rate: int, rtt: int, delay: tuple[float, float], tracking: int | None = None) -> dict[str, Any]:
        row = _run_point(db, db_url, emulator, start_pool, rate, rtt, delay, next_id[0], tracking)
        next_id[0] += row["commits"] + 1
        return row

    def run() -> None:
        for rate, rtt, delay in _points() if GRID else []:
            rows.append(point(rate, rtt, delay))
        reference = max(RATES) if _bench.SMOKE else 1000
        for n in range(TRACKING_ROUNDS):  # off first, then on first: the table grows from point to point
            for tracking in (0, 16) if n % 2 == 0 else (16, 0):
                rows.append({"tracking": tracking} | point(reference, 0, (0.0, 0.0), tracking))

    benchmark.group = "freshness"
    benchmark.pedantic(run, rounds=1, iterations=1)
    overhead = {}
    for tracking in (0, 16):
        mine = [r for r in rows if r.get("tracking") == tracking]
        overhead[tracking] = {
            "accepted_p99_ms": statistics.median(r["accepted"]["p99_ms"] for r in mine),
            "worker_cpu_us_per_record": statistics.median(r["worker_cpu_us_per_record"] for r in mine),
        }
    benchmark.extra_info.update(points=rows, tracking=overhead)
    print(
        "\nrate/s  rtt ms  publish ms  accepted p50/p95/p99 ms    searchable p50/p95/p99 ms   tracking  worker us/rec"
    )
    for r in rows:
        a, s = r["accepted"], r["searchable"]
        print(
            f"{r['rate']:6}  {r['rtt_ms']:6}  {r['publish_delay_ms']:6.0f}+{r['publish_ms_per_record']:.2f}"
            f"  {a['p50_ms']:7.1f} {a['p95_ms']:7.1f} {a['p99_ms']:7.1f}"
            f"    {s['p50_ms']:7.1f} {s['p95_ms']:7.1f} {s['p99_ms']:7.1f}   {r.get('tracking', 16):8}"
            f"  {r['worker_cpu_us_per_record']:8.1f}"
        )
    print(f"tracking off / on (medians): {overhead}")
    if GRID and not _bench.SMOKE:
        _plot([r for r in rows if "tracking" not in r])


def _plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(DELAYS), figsize=(6 * len(DELAYS), 4), squeeze=False)
    for ax, delay in zip(axes[0], DELAYS, strict=True):
        for rate in RATES:
            mine = [r for r in rows if r["rate"] == rate and r["publish_delay_ms"] == delay[0]]
            rtts = [r["rtt_ms"] for r in mine]
            ax.plot(rtts, [r["accepted"]["p99_ms"] for r in mine], "o--", label=f"{rate}/s accepted p99")
            ax.plot(rtts, [r["searchable"]["p99_ms"] for r in mine], "o-", label=f"{rate}/s searchable p99")
        ax.set_title(f"publish delay {delay[0]:.0f} ms + {delay[1]} ms/record")
        ax.set_xlabel("round trip to Algolia (ms)")
        ax.set_ylabel("commit -> ... (ms)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "freshness.png", dpi=90)
