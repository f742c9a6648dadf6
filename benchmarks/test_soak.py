"""Soak: the write-and-sync workload for a set time (10 minutes; the smoke form a few seconds) with
autovacuum on, sampling table sizes, dead tuples, worker RSS and drain lag every few seconds.

Autovacuum is off on the shared benchmark server, and a table's `autovacuum_enabled = on` does not
start the launcher when the server-wide switch is off; turning it on needs a configuration reload by
a superuser of a server other people use. So the soak runs on a throwaway cluster of its own
(testing/throwaway_pg.py) with the server defaults, autovacuum on (naptime 1 min), and migrates, watches
and syncs there. It writes benchmarks/results/soak.json and benchmarks/soak.png (the smoke form writes
to a temporary directory), and reports the dead row versions written per synced record, table by
table, from pg_stat_user_tables' n_tup_ins/upd/hot_upd/del deltas.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path

import psycopg
import pytest

from benchmarks import _bench, _soak
from benchmarks._bench import bench_overrides
from testing import assert_index_matches, queue_counts, run_cli, throwaway_pg, wait_until
from workerpool.capture.triggers import watch

HERE = Path(__file__).resolve().parent
SECONDS = _bench._int("WORKERPOOL_BENCH_SOAK_SECONDS", 8 if _bench.SMOKE else 600)
RATE = _bench._int("WORKERPOOL_BENCH_SOAK_RATE", 20 if _bench.SMOKE else 150)  # single-row statements/s
PRODUCTS = _bench._int("WORKERPOOL_BENCH_SOAK_PRODUCTS", 500 if _bench.SMOKE else 20_000)
SAMPLE_EVERY_S = 1.0 if _bench.SMOKE else 5.0
# Whole days would show nothing in 10 minutes: ~173 s (~17 s in the smoke form), so the log reaches
# its retained size within the run and must stay there.
RETENTION_DAYS = os.environ.get("WORKERPOOL_BENCH_SOAK_RETENTION_DAYS", "0.0002" if _bench.SMOKE else "0.002")
WORKERS = 2
# `off` for the comparison run: the same workload with nothing but the workers' own page pruning.
AUTOVACUUM = os.environ.get("WORKERPOOL_BENCH_SOAK_AUTOVACUUM", "on")
SUFFIX = "" if AUTOVACUUM == "on" else f"-autovacuum-{AUTOVACUUM}"
STATS_FLUSH_S = 11.0


@pytest.fixture(scope="module")
def soak_cluster():
    reason = throwaway_pg.missing_reason()
    if reason:
        pytest.skip(reason)
    with throwaway_pg.Cluster({"autovacuum": AUTOVACUUM}) as cluster:
        cluster.start()
        yield cluster


@pytest.mark.timeout(SECONDS + 900)
def test_soak(benchmark, soak_cluster, env, emulator, start_pool, tmp_path):
    with psycopg.connect(soak_cluster.url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS soak WITH (FORCE)")
        admin.execute("CREATE DATABASE soak")
    url = psycopg.conninfo.make_conninfo(soak_cluster.url, dbname="soak")
    pool_env = {**bench_overrides(url), "LOG_RETENTION_DAYS": RETENTION_DAYS}
    assert run_cli({**env, **pool_env}, "migrate").returncode == 0
    new_rows = int(SECONDS * RATE * 0.2) + 1000
    with psycopg.connect(url, autocommit=True) as conn:
        _bench.create_products(conn, "products_src")
        _bench.fill_products(conn, PRODUCTS + new_rows, "products_src")
        _bench.create_products(conn)
        watch(conn, "products", "products")
        conn.execute("INSERT INTO products SELECT * FROM products_src WHERE id <= %s", (PRODUCTS,))
    pool = start_pool("--workers", str(WORKERS), extra_env=pool_env)
    out_dir = tmp_path if _bench.SMOKE else HERE

    with psycopg.connect(url, autocommit=True, application_name="soak-sampler") as conn:
        wait_until(lambda: not queue_counts(conn), timeout=300, interval=0.5, message="the initial sync")
        # An idle session reports its counts to pg_stat_user_tables within 10 s: the counters start
        # (and end, below) once the workers' sessions have reported everything before that point.
        time.sleep(STATS_FLUSH_S)
        before = _soak.counters(conn)
        synced_before = _soak.records_synced(conn)
        writer = _soak.Writer(url, RATE, first_new_id=PRODUCTS + 1, existing=PRODUCTS)
        samples: list[dict] = []

        def soak() -> None:
            t0 = time.monotonic()
            thread = threading.Thread(target=writer.run, name="soak-writer", daemon=True)
            thread.start()
            next_sample = t0
            while time.monotonic() - t0 < SECONDS and writer.error is None:
                samples.append(_soak.sample(conn, t0, pool.worker_pids))
                next_sample += SAMPLE_EVERY_S
                time.sleep(max(0.0, next_sample - time.monotonic()))
            writer.stop.set()
            thread.join(30)
            wait_until(lambda: not queue_counts(conn), timeout=300, interval=0.5, message="the final drain")
            samples.append(_soak.sample(conn, t0, pool.worker_pids))

        benchmark.group = "soak"
        benchmark.pedantic(soak, rounds=1, iterations=1)
        assert writer.error is None, writer.error
        time.sleep(STATS_FLUSH_S)
        after = _soak.counters(conn)
        records = _soak.records_synced(conn) - synced_before
        assert records > 0
        assert_index_matches(conn, emulator, "products", "products")

    summary = _summary(samples, writer, records, _soak.churn(before, after, records))
    result = {
        "seconds": SECONDS,
        "rate": RATE,
        "products": PRODUCTS,
        "workers": WORKERS,
        "log_retention_days": float(RETENTION_DAYS),
        "sample_every_s": SAMPLE_EVERY_S,
        "autovacuum": f"{AUTOVACUUM} (throwaway cluster, server defaults otherwise)",
        "summary": summary,
        "samples": samples,
    }
    (out_dir / "results").mkdir(exist_ok=True)
    (out_dir / "results" / f"soak{SUFFIX}.json").write_text(json.dumps(result, indent=1, default=str))
    _soak.plot(
        samples,
        out_dir / f"soak{SUFFIX}.png",
        f"soak: {SECONDS / 60:g} min, {RATE} single-row writes/s + a {writer.bulk_rows}-row UPDATE every "
        f"{writer.bulk_every_s:g} s, {WORKERS} workers, autovacuum {AUTOVACUUM}, LOG_RETENTION_DAYS={RETENTION_DAYS}",
    )
    benchmark.extra_info.update(summary)


def _summary(samples: list[dict], writer: _soak.Writer, records: int, churn: dict) -> dict:
    """Sizes at the end of the first third and at the end (flat means the two are close), peaks of
    dead tuples, the workers' RSS then and at the end, drain lag percentiles, churn per record."""
    third = next((s for s in samples if s["t"] >= samples[-1]["t"] / 3), samples[0])
    last = samples[-1]
    mb = lambda s, t: round(s["tables"].get(t, {}).get("size_bytes", 0) / 2**20, 2)  # noqa: E731
    lags = [s["lag_s"] for s in samples]
    return {
        "records_synced": records,
        "statements_written": writer.statements,
        "keys_changed": writer.changed_keys,
        "size_mb_at_third": {t: mb(third, t) for t in _soak.HOT_TABLES},
        "size_mb_at_end": {t: mb(last, t) for t in _soak.HOT_TABLES},
        "dead_tuples_max": {t: max(s["tables"].get(t, {}).get("dead", 0) for s in samples) for t in _soak.HOT_TABLES},
        "autovacuums": {t: last["tables"].get(t, {}).get("autovacuums", 0) for t in _soak.HOT_TABLES},
        "log_calls_at_end": last["tables"].get("algolia_sync_log_batches", {}).get("live", 0),
        "worker_rss_mb_at_third": [round(k / 1024, 1) for k in third["worker_rss_kb"]],
        "worker_rss_mb_at_end": [round(k / 1024, 1) for k in last["worker_rss_kb"]],
        "lag_s_p50": statistics.median(lags),
        "lag_s_p95": _bench.percentile(lags, 95),
        "lag_s_max": max(lags),
        "churn": churn,
    }
