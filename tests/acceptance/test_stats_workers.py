"""`workerpool stats` counts each live worker's batches and records up to its last acknowledgement,
not as of its last heartbeat (which a burst between two heartbeats would leave at 0)."""

from __future__ import annotations

import json

from testing import queue_counts, run_cli, wait_until


def _workers(env: dict[str, str]) -> list[dict]:
    result = run_cli(env, "stats", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["workers"]


def test_stats_counts_a_burst_synced_since_the_last_heartbeat(products, env, start_pool):
    db = products
    # Idle workers heartbeat when they wake, every POLLING_INTERVAL (here 5 s): a burst that syncs
    # within that time is newer than every heartbeat.
    start_pool("--workers", "2", "--batch-size", "100", extra_env={"POLLING_INTERVAL": "5000"})
    wait_until(lambda: len(_workers(env)) == 2, timeout=30, message="two live workers")
    db.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 3000) g")
    wait_until(lambda: not queue_counts(db), timeout=60, interval=0.05, message="the burst to sync")
    workers = _workers(env)
    truth = dict(
        db.execute(
            """SELECT claimed_by, count(*) FROM algolia_sync_log WHERE status IN ('success', 'skipped')
            GROUP BY 1"""
        ).fetchall()
    )
    batches = dict(
        db.execute("SELECT claimed_by, count(DISTINCT claim_token) FROM algolia_sync_log GROUP BY 1").fetchall()
    )
    assert sum(w["records"] for w in workers) == 3000, workers
    for w in workers:
        assert w["records"] == truth.get(w["worker_id"], 0), (w, truth)
        assert w["batches"] == batches.get(w["worker_id"], 0), (w, batches)
    # The text form shows the same counts.
    text = run_cli(env, "stats").stdout
    for w in workers:
        assert any(
            line.split()[:1] == [w["worker_id"]] and line.split()[4] == str(w["records"]) for line in text.splitlines()
        ), text
