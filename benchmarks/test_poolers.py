"""The cost of a pooler: the same drain direct, through PgBouncer in session pooling and through
PgBouncer in transaction pooling (no server-side prepared statements, no `synchronous_commit = off`),
side by side in one run, rounds interleaved. Reported as records/s and CPU per record, with each
pooled mode's ratio to direct (benchmarks/README.md#poolers).

    WORKERPOOL_BENCH_POOLER_ROWS (default 20000; 500 in the smoke form)
    WORKERPOOL_BENCH_POOLER_ROUNDS (default 3; 1 in the smoke form)
"""

from __future__ import annotations

import statistics

import pytest

from benchmarks import _bench
from benchmarks._bench import bench_overrides
from benchmarks._drain import run_drain
from testing import queue_counts
from testing.pgbouncer import pgbouncer, pgbouncer_binary, unreachable

ROWS = _bench._int("WORKERPOOL_BENCH_POOLER_ROWS", 500 if _bench.SMOKE else 20_000)
ROUNDS = _bench._int("WORKERPOOL_BENCH_POOLER_ROUNDS", 1 if _bench.SMOKE else 3)
BATCH, WORKERS, POOL = 100, 2, 2  # the defaults' batch size: the read step's extra round trips show most
MODES = ("direct", "session", "transaction")


@pytest.mark.timeout(7200)
@pytest.mark.skipif(pgbouncer_binary() is None, reason="pgbouncer is not installed (.ci/run installs it)")
def test_drain_through_poolers(benchmark, pg_server, products_db, emulator, start_pool):
    import psycopg

    if unreachable(pg_server):
        pytest.skip(unreachable(pg_server))
    figures: dict[str, list[dict]] = {mode: [] for mode in MODES}
    with pgbouncer(pg_server, "session", pool_size=20) as session, pgbouncer(pg_server, "transaction") as tx:
        bouncers = {"session": session, "transaction": tx}

        def one(mode: str) -> None:
            emulator.reset()
            url = products_db(ROWS)
            env = bench_overrides(url)
            if mode != "direct":
                env.update(DATABASE_URL=bouncers[mode].url(url), DATABASE_POOL_MODE=mode)
            bouncer_before = _bench.process_cpu_s(bouncers[mode].proc.pid) if mode != "direct" else 0.0
            result = run_drain(start_pool, env, BATCH, WORKERS, POOL, expected=ROWS)
            if mode != "direct":
                result["cpu_pgbouncer_s"] = _bench.process_cpu_s(bouncers[mode].proc.pid) - bouncer_before
            with psycopg.connect(url, autocommit=True) as conn:
                assert queue_counts(conn) == {}, (mode, queue_counts(conn))
            assert emulator.stats()["indices"].get("products") == ROWS
            figures[mode].append(result)

        def drains() -> None:
            for _ in range(ROUNDS):
                for mode in MODES:
                    one(mode)

        benchmark.group = "poolers"
        benchmark.pedantic(drains, rounds=1, iterations=1)

    def median(mode: str, key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in figures[mode])

    rows = {}
    for mode in MODES:
        rows[mode] = {
            "records_per_s": median(mode, "records_per_s"),
            **{
                f"{part}_us_per_record": round(median(mode, f"cpu_{part}_s") / ROWS * 1e6, 1)
                for part in ("workerpool", "postgres", "pgbouncer")
            },
        }
    for mode in ("session", "transaction"):
        rows[mode]["throughput_vs_direct"] = round(rows[mode]["records_per_s"] / rows["direct"]["records_per_s"], 2)
    print("\nmode          records/s  vs direct   CPU us/record: workerpool  Postgres  PgBouncer")
    for mode, row in rows.items():
        print(
            f"{mode:12}  {row['records_per_s']:9.0f}  {row.get('throughput_vs_direct', 1.0):8.2f}x"
            f"   {row['workerpool_us_per_record']:24.1f}  {row['postgres_us_per_record']:8.1f}"
            f"  {row['pgbouncer_us_per_record']:9.1f}"
        )
    benchmark.extra_info.update(rows=ROWS, rounds=ROUNDS, batch=BATCH, workers=WORKERS, modes=rows)
