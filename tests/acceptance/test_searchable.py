"""Time to searchable (README: Observability): a running pool follows the tasks Algolia accepts until
they are published, and shows commit -> searchable in /metrics, `stats`, the dashboard and the log
rows; `verify` and `run --drain --wait-published` wait for Algolia to publish what it accepted.

The emulator is made to publish each task late (`set_publish_delay`: until then its records are not
readable, as Algolia's), so that searchable and accepted differ by a known amount, and its task log
is the reference the figures are checked against.
"""

from __future__ import annotations

import re
import urllib.request

import orjson

from testing import run_cli, wait_until
from testing.http import free_port

DELAY_S = 0.8


def _scrape(port: int) -> str:
    """/metrics, or '' while the supervisor is not serving yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())
    except OSError:
        return ""


def _sample(text: str, name: str) -> float | None:
    found = re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return sum(float(v) for v in found) if found else None


def test_commit_to_searchable_is_measured_shown_and_recorded(products, env, emulator, start_pool):
    db = products
    emulator.set_publish_delay(DELAY_S * 1000)
    port = free_port()
    pool = start_pool("--workers", "1", extra_env={"HEALTH_PORT": str(port)})
    db.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 40) g")

    # /metrics: every followed record took at least the publish delay, and none is still pending.
    def published() -> str | None:
        text = _scrape(port)
        count = _sample(text, "workerpool_time_to_searchable_seconds_count")
        return text if count and _sample(text, "workerpool_algolia_pending_tasks") == 0 else None

    text = wait_until(published, timeout=60, message="a followed task to be published")
    count = _sample(text, "workerpool_time_to_searchable_seconds_count") or 0
    total = _sample(text, "workerpool_time_to_searchable_seconds_sum") or 0
    assert count >= 1 and DELAY_S <= total / count < 30, (count, total)
    assert _sample(text, 'workerpool_time_to_searchable_seconds_bucket{le="0.5"}') == 0  # below the delay: none
    # Against the emulator's own task log: no record can be searchable sooner than its task took to
    # publish, nor later than the slowest task plus the change -> accepted time and a poll interval.
    log = [t for t in emulator.task_log("products") if t["published_at"] is not None]
    took = [t["published_at"] - t["accepted_at"] for t in log]
    assert log and min(took) >= DELAY_S - 0.001, took
    assert total / count <= max(took) + 5.0, (total / count, took)

    # The claim's log rows carry the publication time: stats and the dashboard read them.
    wait_until(
        lambda: db.execute("SELECT count(*) FROM algolia_sync_log_batches WHERE published_at IS NOT NULL").fetchone()[
            0
        ],
        timeout=30,
        message="published_at on the log",
    )
    late = db.execute(
        "SELECT min(extract(epoch FROM published_at - synced_at)) FROM algolia_sync_log_batches "
        "WHERE published_at IS NOT NULL"
    ).fetchone()[0]
    assert late > 0, "published before acknowledged: the delay was not seen"
    stats = run_cli(env, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    fresh = orjson.loads(stats.stdout)["freshness"]
    assert fresh[0]["table"] == "products" and fresh[0]["searchable"]["p50_s"] >= DELAY_S, fresh
    assert fresh[0]["searchable"]["p50_s"] > fresh[0]["ack"]["p50_s"], fresh
    text_stats = run_cli(env, "stats").stdout
    assert "change -> searchable" in text_stats and "searchable p50" in text_stats, text_stats
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=5) as response:
        overview = orjson.loads(response.read())
    index = next(i for i in overview["indices"] if i["table"] == "products")
    assert index["searchable"]["p50_s"] >= DELAY_S and index["searchable"]["samples"] >= 1, index
    assert pool.stop() == 0


def test_tracking_off_follows_nothing(products, env, emulator, start_pool):
    port = free_port()
    start_pool("--workers", "1", extra_env={"HEALTH_PORT": str(port), "TASK_TRACKING": "0"})
    products.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 20) g")
    wait_until(lambda: len(emulator.records("products")) == 20, timeout=60)
    wait_until(lambda: not products.execute("SELECT count(*) FROM algolia_sync_queue").fetchone()[0], timeout=30)
    assert not _sample(_scrape(port), "workerpool_time_to_searchable_seconds_count")
    assert (
        products.execute("SELECT count(*) FROM algolia_sync_log_batches WHERE published_at IS NOT NULL").fetchone()[0]
        == 0
    )


def test_verify_waits_for_what_algolia_accepted_and_still_finds_real_drift(products, env, emulator, start_pool):
    db = products
    emulator.set_publish_delay(1500)
    pool = start_pool("--workers", "1")
    db.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 30) g")
    wait_until(lambda: not db.execute("SELECT count(*) FROM algolia_sync_queue").fetchone()[0], timeout=60)
    assert len(emulator.records("products")) < 30  # acknowledged, not yet searchable
    clean = run_cli(env, "verify", "products")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert len(emulator.records("products")) == 30
    pool.stop()
    gone = sorted(emulator.records("products"))[0]
    emulator.client().delete_object("products", gone)  # real drift, made behind workerpool's back
    drift = run_cli(env, "verify", "products", "--json")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    report = orjson.loads(drift.stdout)
    assert report["missing"] == 1 and gone in str(report), report


def test_run_drain_wait_published_returns_once_everything_is_searchable(products, env, emulator):
    emulator.set_publish_delay(1000)
    products.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 25) g")
    result = run_cli(env, "run", "--drain", "--wait-published")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Algolia has published every write it accepted (1 index(es))" in result.stdout
    assert len(emulator.records("products")) == 25
