"""End-to-end drain: N queued changes of a realistic product table, drained by `workerpool run --drain`
(the real supervisor, as a subprocess) into the emulator over real HTTP. Reported as records/s."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import psycopg
import pytest

from benchmarks import _bench
from benchmarks._bench import bench_overrides, rows_for
from benchmarks._drain import run_drain, run_profiled_drain
from testing import assert_index_matches, queue_counts


def _check_synced(url: str, emulator, rows: int) -> None:
    """Nothing left in the queue, and the index equals the table (the tests' own check), record for
    record; past 200,000 rows only the counts are compared, to keep the check short."""
    stats = emulator.stats()
    assert stats["indices"].get("products") == rows, stats
    assert not any(stats["rejected"].values()), stats
    with psycopg.connect(url, autocommit=True) as conn:
        assert queue_counts(conn) == {}, queue_counts(conn)
        if rows <= 200_000:
            assert_index_matches(conn, emulator, "products", "products")


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    "batch,workers,pool",
    _bench.drain_points(),
    ids=[f"batch{b}-workers{w}-pool{p}" for b, w, p in _bench.drain_points()],
)
def test_drain(benchmark, batch, workers, pool, products_db, emulator, start_pool, bench_round):
    rows = rows_for(batch)
    url = products_db(rows)
    result = {}

    def drain() -> None:
        result.update(run_drain(start_pool, bench_overrides(url), batch, workers, pool, expected=rows))

    benchmark.group = "drain"
    benchmark.pedantic(drain, rounds=1, iterations=1)
    _check_synced(url, emulator, rows)
    benchmark.extra_info.update(result, round=bench_round)


@pytest.mark.timeout(7200)
def test_memory_flat_over_long_drain(benchmark, products_db, emulator, start_pool):
    """Peak RSS of each worker over a long drain: it should settle and stay flat."""
    rows = _bench.MEMORY_ROWS
    batch, workers, pool = _bench.REFERENCE_BATCH, _bench.REFERENCE_WORKERS, _bench.DEFAULT_POOL
    if _bench.SMOKE:
        batch = _bench.BATCH_SIZES[0]
    url = products_db(rows)
    result = {}

    def progress() -> int:
        return emulator.stats()["record_writes_total"]

    def drain() -> None:
        result.update(
            run_drain(
                start_pool,
                bench_overrides(url),
                batch,
                workers,
                pool,
                expected=rows,
                progress=progress,
                sample_rss=True,
            )
        )

    benchmark.group = "memory"
    benchmark.pedantic(drain, rounds=1, iterations=1)
    _check_synced(url, emulator, rows)
    benchmark.extra_info.update(result)
    assert result["rss"], "no worker was sampled"


def _py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


@pytest.mark.skipif(not _bench.PROFILE, reason="set WORKERPOOL_BENCH_PROFILE=1 (needs py-spy)")
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("workers", [1, _bench.REFERENCE_WORKERS] if not _bench.SMOKE else [_bench.WORKER_COUNTS[0]])
def test_profile_drain(benchmark, workers, products_db, env, emulator):
    """Where a worker's time goes during the reference drain (py-spy, wall-clock samples incl. waits)."""
    py_spy = _py_spy()
    if py_spy is None:
        pytest.skip("py-spy is not installed (pip install py-spy)")
    batch = _bench.REFERENCE_BATCH if not _bench.SMOKE else _bench.BATCH_SIZES[0]
    rows = rows_for(batch)
    url = products_db(rows)
    out = {}

    def drain() -> None:
        summary, raw = run_profiled_drain({**env, **bench_overrides(url)}, batch, workers, _bench.DEFAULT_POOL, py_spy)
        out.update(summary)
        keep = Path(__file__).resolve().parent.parent / ".benchmarks" / f"profile-batch{batch}-workers{workers}.txt"
        keep.parent.mkdir(exist_ok=True)
        keep.write_text(raw)  # the raw stacks (git-ignored), for flame graphs or a closer look
        out["raw_stacks"] = str(keep)

    benchmark.group = "profile"
    benchmark.pedantic(drain, rounds=1, iterations=1)
    benchmark.extra_info.update(
        {"rows": rows, "batch_size": batch, "workers": workers, "pool_size": _bench.DEFAULT_POOL, "profile": out}
    )
    print(f"\nbatch {batch}, {workers} worker(s); raw stacks in {out['raw_stacks']}")
    for role in ("main", "sender"):
        if role in out:
            print(f"  {role} thread(s), {out[role]['samples']} samples:")
            for name, pct in out[role]["percent"].items():
                print(f"    {name:<62} {pct:5.1f}%")
    for frame, n in out["top_other_frames"]:
        print(f"  other: {n:6d}  {frame[:160]}")
