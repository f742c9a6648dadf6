"""An Algolia outage, a slow, lying or huge answer never costs a record (docs/operations.md, the README's
failure table): rows go back without spending attempts, only Algolia's real answer acknowledges
anything, every answer is read under a deadline and a size cap, and the index ends equal to the table.

The outage's three phases (503, connection resets, connection refused) last
WORKERPOOL_OUTAGE_PHASE_SECONDS each (6 in CI; 20 for the issue's full 60 s).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import psutil
import psycopg

from testing import assert_index_matches, expected_records, queue_counts, run_cli, wait_until
from testing.faultproxy import FaultProxy

PHASE_S = float(os.environ.get("WORKERPOOL_OUTAGE_PHASE_SECONDS", "6"))
ANY_ID = "SELECT id FROM products ORDER BY random() LIMIT 1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


class Writers:
    """A writer thread inserting, updating and deleting products until stopped."""

    def __init__(self, db_url: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db_url,), daemon=True)
        self.statements = 0

    def __enter__(self) -> Writers:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self, db_url: str) -> None:
        rng = random.Random(27)
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not self._stop.is_set():
                choice = rng.random()
                if choice < 0.5:
                    conn.execute("INSERT INTO products (name, price) VALUES (%s, %s)", (f"p{rng.random()}", 1))
                elif choice < 0.85:
                    conn.execute(f"UPDATE products SET price = price + 1 WHERE id = ({ANY_ID})")
                else:
                    conn.execute(f"DELETE FROM products WHERE id = ({ANY_ID})")
                self.statements += 1
                time.sleep(0.01)


def _failed(db: psycopg.Connection) -> list[tuple]:
    return db.execute(
        "SELECT record_id, attempts, last_error FROM algolia_sync_queue WHERE status = 'failed'"
    ).fetchall()


def test_an_algolia_outage_spends_no_attempt_fails_health_and_converges(products, db_url, env, emulator, start_pool):
    db = products
    port = _free_port()
    with FaultProxy(urlsplit(emulator.url).port or 0) as proxy:
        pool = start_pool(
            "--workers",
            "2",
            extra_env={
                "ALGOLIA_HOSTS": proxy.url,
                "HEALTH_PORT": str(port),
                "HEALTH_ALGOLIA_DOWN_SECONDS": "2",
                "RETRY_BACKOFF": "200",
                "MAX_RETRIES": "2",  # an outage that spent attempts would fail rows at once
            },
        )
        wait_until(lambda: _health(port)[0] == 200, timeout=30, message="/healthz 200")
        seen: list[tuple[int, dict]] = []
        with Writers(db_url) as writers:
            time.sleep(1)
            for phase in ("503", "reset", "refuse"):
                if phase == "503":
                    emulator.inject_fault(status=503, seconds=PHASE_S, writes_only=True)
                else:
                    proxy.mode = phase  # type: ignore[assignment]
                deadline = time.monotonic() + PHASE_S
                while time.monotonic() < deadline:
                    seen.append(_health(port))
                    time.sleep(0.5)
                proxy.mode = "pass"
            time.sleep(1)
        assert writers.statements > 100
        wait_until(lambda: not queue_counts(db), timeout=120, message="the backlog to drain after the outage")
        assert _failed(db) == []
        assert_index_matches(db, emulator, "products", "products")
        down = [body for status, body in seen if status == 503]
        assert down and all("Algolia unreachable" in " ".join(b["reasons"]) for b in down), seen[-3:]
        wait_until(lambda: _health(port)[0] == 200, timeout=30, message="/healthz 200 again")
    unreachable = pool.lines("algolia_unreachable")
    assert unreachable and not pool.lines("row_failed")
    errors = {line["error"].split(":")[0] for line in unreachable}
    assert errors, errors
    assert pool.lines("algolia_reachable")


def test_slow_lying_and_huge_answers_never_acknowledge_and_never_hold_a_worker(products, env, emulator, start_pool):
    db = products
    pool = start_pool(
        "--workers",
        "2",
        extra_env={"ALGOLIA_REQUEST_DEADLINE": "2000", "RETRY_BACKOFF": "200", "MAX_RETRIES": "2"},
    )
    wait_until(lambda: len(pool.worker_pids()) == 2, timeout=30, message="two workers")

    # An answer that trickles a byte every 0.5 s (30 s in all): cut off at the deadline, sent again.
    emulator.inject_fault(trickle_bytes=60, trickle_interval_ms=500, count=1, writes_only=True)
    db.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 50) g")
    wait_until(lambda: not queue_counts(db), timeout=60, message="the trickled batch to be sent again")
    assert_index_matches(db, emulator, "products", "products")

    # A proxy's 200 page and a JSON 200 that is not a batch answer: neither acknowledges anything.
    emulator.inject_fault(answer="<html>ok</html>", count=3, writes_only=True)
    emulator.inject_fault(answer='{"message":"ok"}', count=3, writes_only=True)
    db.execute("UPDATE products SET price = price + 1")
    wait_until(lambda: not queue_counts(db), timeout=60, message="the batches the liar answered to be sent again")
    assert_index_matches(db, emulator, "products", "products")

    # A 300 MB answer: cut off at ALGOLIA_MAX_ANSWER_BYTES, never read whole.
    emulator.inject_fault(huge_bytes=300_000_000, count=1, writes_only=True)
    db.execute("UPDATE products SET price = price + 1")
    rss: list[int] = []

    def drained() -> bool:
        for pid in pool.worker_pids():
            try:
                rss.append(psutil.Process(pid).memory_info().rss)
            except psutil.NoSuchProcess:
                pass
        return not queue_counts(db)

    wait_until(drained, timeout=60, interval=0.05, message="the batch the huge answer came back for")
    assert_index_matches(db, emulator, "products", "products")
    assert rss and max(rss) < 300 * 2**20, f"a worker reached {max(rss) / 2**20:.0f} MB"

    assert _failed(db) == []
    errors = " ".join(line["error"] for line in pool.lines("algolia_unreachable"))
    assert "ALGOLIA_REQUEST_DEADLINE" in errors and "ALGOLIA_MAX_ANSWER_BYTES" in errors
    assert "not JSON" in errors and "no taskID" in errors
    assert emulator.stats()["rejected"].get("not_algolia", 0) >= 8


STUCK_TRANSFORM = """
import time


def shape(record):
    if record["name"] == "stuck":  # catches every interruption: never returns
        while True:
            try:
                time.sleep(3600)
            except BaseException:
                pass
    if record["name"] == "slow":  # catches the first interruption only
        try:
            time.sleep(3600)
        except BaseException:
            time.sleep(3600)
    return record
"""


def test_a_transform_that_never_returns_fails_its_row_alone(products, env, emulator, start_pool, tmp_path):
    db = products
    (tmp_path / "stuck_transform.py").write_text(STUCK_TRANSFORM)
    path = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH", "")) if p)}
    result = run_cli(
        {**env, **path}, "watch", "products", "--index", "products", "--transform", "stuck_transform:shape"
    )
    assert result.returncode == 0, result.stderr
    pool = start_pool("--workers", "2", extra_env={**path, "TRANSFORM_TIMEOUT": "500", "BATCH_SIZE": "100"})
    db.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 398) g")
    db.execute("INSERT INTO products (id, name, price) VALUES (100000, 'stuck', 1), (100001, 'slow', 1)")
    wait_until(lambda: queue_counts(db) == {"failed": 2}, timeout=120, message="everything but the two to sync")
    failed = {r[0]: r[2] for r in _failed(db)}
    assert "ignored being interrupted" in failed["100000"] and "TRANSFORM_TIMEOUT=500" in failed["100000"]
    assert "did not return within TRANSFORM_TIMEOUT=500" in failed["100001"]
    stuck = pool.lines("transform_stuck")
    assert len(stuck) == 1 and stuck[0]["record_id"] == "100000"
    wait_until(lambda: len(pool.worker_pids()) == 2, timeout=30, message="the worker to be replaced")
    expected = {k: v for k, v in expected_records(db, "products", "id").items() if k not in failed}
    actual = {k: {a: b for a, b in r.items() if a != "_version"} for k, r in emulator.records("products").items()}
    assert actual == expected


def test_a_worker_whose_loop_stops_is_killed_and_replaced(products, env, emulator, start_pool):
    db = products
    pool = start_pool("--workers", "2", extra_env={"WORKER_TIMEOUT": "2000"})
    wait_until(lambda: len(pool.worker_pids()) == 2, timeout=30, message="two workers")
    frozen = pool.worker_pids()[0]
    os.kill(frozen, signal.SIGSTOP)  # its loop stops: no heartbeat
    timed_out = wait_until(lambda: pool.lines("worker_timed_out"), timeout=30, message="the supervisor to notice")
    assert timed_out[0]["worker_pid"] == frozen
    wait_until(lambda: len([p for p in pool.worker_pids() if p != frozen]) == 2, timeout=30, message="a new worker")
    db.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 50) g")
    wait_until(lambda: not queue_counts(db), timeout=60, message="the rows to sync")
    assert_index_matches(db, emulator, "products", "products")
