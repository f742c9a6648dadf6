"""The composite-key path against a one-column key, side by side in one run: the same rows in two
watched tables, one keyed by `id` (bigint), the other by `(store_id, sku)` (int, text: per-store
prices, a multi-tenant catalog). Measured for each, alternating which goes first:

* capture: a bulk INSERT (the trigger's streaming path), one transaction per row (its small path),
  and a set-wise UPDATE of a non-key column;
* the worker's read of a claim's rows (`Shaper.load_rows`, 1,000 keys per read, the query a worker
  runs per batch).

Reported as ratios, composite / one-column (1.0: no cost for the second column)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

from benchmarks import _bench
from testing import spill_all
from workerpool.capture.model import find_watched
from workerpool.capture.triggers import watch
from workerpool.config import Settings
from workerpool.runtime.shaping import Shaper

TABLES = {"single": "items_single", "composite": "items_composite"}
KEYS = {"single": "PRIMARY KEY (id)", "composite": "PRIMARY KEY (store_id, sku)"}
BATCH = 1000


def _tables(db, rows: int) -> None:
    db.execute(
        "CREATE TABLE items_src AS SELECT g::bigint AS id, g %% 50 AS store_id, 'SKU-' || g AS sku,"
        " 'item ' || g AS name, (g %% 1000) * 1.25 AS price FROM generate_series(1, %s) g",
        (rows,),
    )
    for mode, table in TABLES.items():
        db.execute(
            f"CREATE TABLE {table} (id bigint NOT NULL, store_id int NOT NULL, sku text NOT NULL,"
            f" name text, price numeric, {KEYS[mode]})"
        )
        watch(db, table, table)
    db.execute("VACUUM ANALYZE items_src")


def _reset(db) -> None:
    db.execute(f"TRUNCATE {', '.join(TABLES.values())}, algolia_sync_queue, algolia_sync_inbox")
    db.execute("CHECKPOINT")


def _timed(f: Callable[[], object]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


@pytest.mark.timeout(1800)
def test_composite_key_capture_and_read(benchmark, db):
    rows = _bench.CAPTURE_BULK_ROWS
    singles = _bench.CAPTURE_SINGLE_ROWS // 2
    rounds = 1 if _bench.SMOKE else 3
    _tables(db, rows)
    source = db.execute(f"SELECT id, store_id, sku, name, price FROM items_src ORDER BY id LIMIT {singles}").fetchall()
    shaper = Shaper(Settings())
    times: dict[str, dict[str, list[float]]] = {m: {"bulk": [], "single": [], "update": [], "read": []} for m in TABLES}

    def one(mode: str) -> None:
        table = TABLES[mode]
        _reset(db)
        times[mode]["bulk"].append(_timed(lambda: db.execute(f"INSERT INTO {table} SELECT * FROM items_src")))
        times[mode]["update"].append(_timed(lambda: db.execute(f"UPDATE {table} SET price = price + 1")))
        spill_all(db, BATCH)
        keys = [r[0] for r in db.execute("SELECT record_id FROM algolia_sync_queue ORDER BY id")]
        assert len(keys) == rows
        watched = find_watched(db, table)
        batches = [keys[i : i + BATCH] for i in range(0, len(keys), BATCH)]

        def read() -> None:
            for batch in batches:
                assert len(shaper.load_rows(db, watched, table, batch).rows) == len(batch)

        times[mode]["read"].append(_timed(read))
        db.execute(f"TRUNCATE {table}")
        query = f"INSERT INTO {table} VALUES (%s, %s, %s, %s, %s)"

        def single_rows() -> None:
            for row in source:  # autocommit: one transaction (and one commit) per row
                db.execute(query, row, prepare=True)

        times[mode]["single"].append(_timed(single_rows))

    def run() -> None:
        for r in range(rounds):
            for mode in ("single", "composite") if r % 2 == 0 else ("composite", "single"):
                one(mode)

    benchmark.group = "composite-keys"
    benchmark.pedantic(run, rounds=1, iterations=1)
    medians = {m: {k: statistics.median(v) for k, v in t.items()} for m, t in times.items()}
    benchmark.extra_info.update(
        {
            "rows": rows,
            "single_row_transactions": singles,
            "rounds": rounds,
            **{f"{m}_{k}_s": round(v, 4) for m, t in medians.items() for k, v in t.items()},
            **{
                f"ratio_{k}": round(medians["composite"][k] / medians["single"][k], 3)
                for k in ("bulk", "single", "update", "read")
            },
        }
    )
