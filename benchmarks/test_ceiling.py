"""The database's own ceiling for the pipeline: workerpool's claim and ack SQL back to back
(`get_pending_algolia_syncs` + `algolia_sync_ack`, through workerpool.runtime.queue), no Algolia step and no
row reading, at the drain's batch sizes and process counts, each process with its own connection."""

from __future__ import annotations

import psycopg
import pytest

from benchmarks import _bench
from benchmarks._bench import rows_for
from benchmarks._procs import claim_ack_loop, measure_processes
from testing import queue_counts


@pytest.mark.timeout(3600)
@pytest.mark.parametrize(
    "batch,workers",
    _bench.ceiling_points(),
    ids=[f"batch{b}-workers{w}" for b, w in _bench.ceiling_points()],
)
def test_claim_ack_ceiling(benchmark, batch, workers, products_db, bench_round):
    rows = rows_for(batch)
    url = products_db(rows)
    result = measure_processes(benchmark, claim_ack_loop, url, batch, workers, "claim/ack ceiling")
    assert result["records"] == rows, result
    with psycopg.connect(url, autocommit=True) as conn:
        assert queue_counts(conn) == {}
    benchmark.extra_info.update({"rows": rows, "batch_size": batch, "workers": workers, "round": bench_round, **result})
