"""Capture overhead: the same inserts into a watched table (statement-level triggers enqueue set-wise
and NOTIFY) and into an unwatched copy of it. Reported as a ratio, watched / unwatched; the rounds of
the two alternate so that drift (checkpoints, other load) hits both alike.

A bulk statement (over 100 rows) writes its keys into the inbox; the workers later move them into the
queue. That later work is measured too (`spill_s`, one worker's calls until the inbox is empty), so the
report shows what moved out of the writer's transaction, not only what it saves."""

from __future__ import annotations

import statistics
import time

import pytest

from benchmarks import _bench
from testing import spill_all
from workerpool.capture.triggers import watch

INSERT_COLUMNS = "id, sku, name, description, brand, category, price, stock, tags, attrs, created_at, updated_at"


def _tables(db, rows: int) -> None:
    _bench.create_products(db, "products_src")
    _bench.fill_products(db, rows, "products_src")
    _bench.create_products(db, "products")
    _bench.create_products(db, "products_plain")
    watch(db, "products", "products")
    db.execute("VACUUM ANALYZE products_src")


def _reset(db) -> None:
    db.execute("TRUNCATE products, products_plain, algolia_sync_queue, algolia_sync_inbox")
    db.execute("CHECKPOINT")


TABLES = {"unwatched": "products_plain", "watched": "products"}


@pytest.mark.timeout(1800)
def test_capture_bulk_insert(benchmark, db):
    rows = _bench.CAPTURE_BULK_ROWS
    rounds = 1 if _bench.SMOKE else 3
    _tables(db, rows)
    times: dict[str, list[float]] = {"unwatched": [], "watched": []}
    spills: list[float] = []

    def run() -> None:
        for r in range(rounds):
            for mode in ("unwatched", "watched") if r % 2 == 0 else ("watched", "unwatched"):
                _reset(db)
                t = time.perf_counter()
                db.execute(f"INSERT INTO {TABLES[mode]} SELECT * FROM products_src")
                times[mode].append(time.perf_counter() - t)
                if mode == "watched":
                    t = time.perf_counter()
                    spill_all(db, 1000)  # what a worker at BATCH_SIZE 1000 does before it claims
                    spills.append(time.perf_counter() - t)
                    assert db.execute("SELECT count(*) FROM algolia_sync_queue").fetchone()[0] == rows

    benchmark.group = "capture"
    benchmark.pedantic(run, rounds=1, iterations=1)
    plain, watched = statistics.median(times["unwatched"]), statistics.median(times["watched"])
    benchmark.extra_info.update(
        {
            "rows": rows,
            "rounds": rounds,
            "unwatched_s": round(plain, 4),
            "watched_s": round(watched, 4),
            "unwatched_rows_per_s": round(rows / plain, 1),
            "watched_rows_per_s": round(rows / watched, 1),
            "ratio": round(watched / plain, 3),
            "target_ratio": 3.0,
            "spill_s": round(statistics.median(spills), 4),
            "spill_keys_per_s": round(rows / statistics.median(spills), 1),
            "all_unwatched_s": [round(t, 4) for t in times["unwatched"]],
            "all_watched_s": [round(t, 4) for t in times["watched"]],
        }
    )


@pytest.mark.timeout(1800)
def test_capture_single_row_transactions(benchmark, db):
    rows = _bench.CAPTURE_SINGLE_ROWS
    blocks = 1 if _bench.SMOKE else 5
    _tables(db, rows)
    # attrs as text, cast back to jsonb by the INSERT: what an application driver sends anyway.
    source = db.execute(
        f"SELECT {INSERT_COLUMNS.replace('attrs', 'attrs::text')} FROM products_src ORDER BY id"
    ).fetchall()
    size = -(-len(source) // blocks)
    chunks = [source[i : i + size] for i in range(0, len(source), size)]
    times: dict[str, float] = {"unwatched": 0.0, "watched": 0.0}
    placeholders = ", ".join("%s::jsonb" if c.strip() == "attrs" else "%s" for c in INSERT_COLUMNS.split(","))

    def run() -> None:
        for n, chunk in enumerate(chunks):
            for mode in ("unwatched", "watched") if n % 2 == 0 else ("watched", "unwatched"):
                _reset(db)
                query = f"INSERT INTO {TABLES[mode]} ({INSERT_COLUMNS}) VALUES ({placeholders})"
                t = time.perf_counter()
                for row in chunk:  # autocommit: one transaction (and one commit) per row
                    db.execute(query, row, prepare=True)
                times[mode] += time.perf_counter() - t

    benchmark.group = "capture"
    benchmark.pedantic(run, rounds=1, iterations=1)
    plain, watched = times["unwatched"], times["watched"]
    benchmark.extra_info.update(
        {
            "rows": rows,
            "blocks": blocks,
            "unwatched_s": round(plain, 4),
            "watched_s": round(watched, 4),
            "unwatched_us_per_row": round(plain / rows * 1e6, 1),
            "watched_us_per_row": round(watched / rows * 1e6, 1),
            "ratio": round(watched / plain, 3),
            "target_ratio": 1.3,
        }
    )
