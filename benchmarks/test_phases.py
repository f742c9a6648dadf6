"""`benchmarks/phases.py` (a script, not a benchmark) keeps working: a small drain, step by step."""

from __future__ import annotations

import psycopg
import pytest

from benchmarks import _bench
from benchmarks.phases import STEPS, measure


@pytest.mark.parametrize("capture", [False, True], ids=["queued", "captured"])
def test_phases_charges_every_step_of_a_drain(empty_db_url, capture):
    rows = 500 if _bench.SMOKE else 5_000
    figures = measure(empty_db_url, rows, 100, capture)
    assert figures["rows"] == figures["indexed"] == rows  # every change acknowledged and in the index
    assert set(figures["client_us"]) == set(figures["server_us"]) == set(STEPS)
    assert figures["client_us"]["build"] > 0  # thread CPU has sub-microsecond resolution
    assert all(v >= 0 for v in figures["server_us"].values())  # backend CPU comes in 10 ms ticks


def test_phases_peer_budget_compares_with_pgqueuer(empty_db_url, db_url):
    """`--peer`: PgQueuer drains the same number of jobs on another database, and the budget of
    twice its rate is stated in CPU per record next to what the steps used."""
    pytest.importorskip("pgqueuer", reason="pip install 'workerpool[bench]' (pgqueuer, asyncpg)")
    pytest.importorskip("asyncpg")
    from benchmarks.phases import budget, measure_peer

    rows = 500 if _bench.SMOKE else 5_000
    figures = measure(empty_db_url, rows, 100)
    peer = measure_peer(db_url, rows, 100, 2)  # asserts that every job was run and none is left
    assert peer["jobs"] == rows and peer["records_per_s"] > 0 and peer["client_us"] > 0
    b = budget(figures, peer, cpus=2)
    assert b["rate"] == 2 * peer["records_per_s"]
    assert b["budget_us"] == round(2 / b["rate"] * 1e6, 1)
    assert b["used_us"] == round(b["worker_us"] + b["emulator_us"] + b["postgres_us"], 1)
    if peer["postgres_us"]:  # None where the server's processes cannot be read (not on this machine)
        assert b["postgres_ratio"] == round(b["postgres_us"] / peer["postgres_us"], 2)


def test_phases_floor_drains_the_least_lease_queue_with_each_guarantee(empty_db_url):
    """`--floor`: the least lease queue claims, reads and deletes every key of the same catalogue,
    alone, with each guarantee, and with all of them; the guarantees leave their rows behind."""
    from benchmarks import floor

    rows = 500 if _bench.SMOKE else 5_000
    figures = floor.measure(empty_db_url, rows, 100)  # asserts that every key was acknowledged each time
    assert set(figures["server_us"]) == {"floor", *floor.PARTS, "all"}
    assert all(set(steps) == set(floor.STEPS) for steps in figures["server_us"].values())
    with psycopg.connect(empty_db_url) as conn:  # the last drain, "all", wrote every guarantee's rows
        assert conn.execute("SELECT count(*) FROM floor_queue").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM floor_hashes").fetchone() == (rows,)
        assert conn.execute("SELECT sum(cardinality(record_ids)) FROM floor_log").fetchone() == (rows,)
