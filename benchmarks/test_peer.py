"""A peer for scale: PgQueuer (benchmark-only dependency) draining the same number of no-op jobs at the
same batch size and process count, on its own fresh database from the tests' fixture."""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import _bench
from benchmarks._bench import rows_for
from benchmarks._procs import (
    measure_processes,
    pgqueuer_install_and_enqueue,
    pgqueuer_left,
    pgqueuer_loop,
)

pgqueuer = pytest.importorskip("pgqueuer", reason="pip install 'workerpool[bench]' (pgqueuer, asyncpg)")
pytest.importorskip("asyncpg")


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    "batch,workers",
    _bench.peer_points(),
    ids=[f"batch{b}-workers{w}" for b, w in _bench.peer_points()],
)
def test_pgqueuer_noop_drain(benchmark, batch, workers, db_url, pg_server, bench_round):
    jobs = rows_for(batch)
    assert asyncio.run(pgqueuer_install_and_enqueue(db_url, jobs)) == jobs
    _bench.checkpoint(pg_server)  # as before every workerpool point
    result = measure_processes(benchmark, pgqueuer_loop, db_url, batch, workers, "peer: pgqueuer")
    assert result["records"] == jobs, result
    assert asyncio.run(pgqueuer_left(db_url)) == 0
    benchmark.extra_info.update(
        {
            "rows": jobs,
            "batch_size": batch,
            "workers": workers,
            "round": bench_round,
            "pgqueuer_version": pgqueuer.__version__,
            **result,
        }
    )
