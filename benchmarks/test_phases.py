"""`benchmarks/phases.py` (a script, not a benchmark) keeps working: a small drain, step by step."""

from __future__ import annotations

from benchmarks import _bench
import pytest

from benchmarks.phases import STEPS, measure


@pytest.mark.parametrize("capture", [False, True], ids=["queued", "captured"])
def test_phases_charges_every_step_of_a_drain(empty_db_url, capture):
    rows = 500 if _bench.SMOKE else 5_000
    figures = measure(empty_db_url, rows, 100, capture)
    assert figures["rows"] == figures["indexed"] == rows  # every change acknowledged and in the index
    assert set(figures["client_us"]) == set(figures["server_us"]) == set(STEPS)
    assert figures["client_us"]["build"] > 0  # thread CPU has sub-microsecond resolution
    assert all(v >= 0 for v in figures["server_us"].values())  # backend CPU comes in 10 ms ticks
