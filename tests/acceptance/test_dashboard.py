"""The operator dashboard at `/` of the health server: its JSON, its guarded action, and the page itself
driven in a real headless Chromium.

Real `workerpool run` supervisors against a real Postgres and the emulator over real HTTP; the
browser test uses Debian's `chromium` and `chromium-driver` (installed by `.ci/run`) through selenium,
which downloads nothing. Set WORKERPOOL_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the
README's screenshot from the browser test.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import psycopg
import pytest

from testing import (
    assert_index_matches,
    queue_counts,
    run_cli,
    wait_until,
    workerpool_cmd,
)

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(
    port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=15) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except OSError:
        return 0, {}, b""


def _overview(port: int) -> dict | None:
    status, _, body = _request(port, "/api/overview")
    return orjson.loads(body) if status == 200 else None


def _retry(
    port: int, doc: object, token: str | None = None, content_type: str = "application/json", raw: bytes | None = None
) -> tuple[int, dict[str, str], dict]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, head, body = _request(port, "/api/retry", "POST", raw if raw is not None else orjson.dumps(doc), headers)
    return status, head, orjson.loads(body) if body else {}


def _insert(db: psycopg.Connection, first: int, last: int) -> None:
    db.execute(
        "INSERT INTO products (id, name, price, stock) "
        "SELECT g, 'item ' || g, g * 1.25, g %% 7 FROM generate_series(%s::int, %s::int) g",
        (first, last),
    )


def _index(doc: dict, table: str = "products") -> dict:
    return next(i for i in doc["indices"] if i["table"] == table)


def _failed(db: psycopg.Connection) -> list[tuple[int, str, str]]:
    return db.execute(
        "SELECT id, record_id, last_error FROM algolia_sync_queue WHERE status = 'failed' ORDER BY record_id"
    ).fetchall()


# ---- the JSON endpoint and the action, over plain HTTP ------------------------------------------


@pytest.mark.slow
def test_overview_reports_the_queue_and_the_retry_action_needs_the_token(products, env, emulator, start_pool):
    db = products
    port, token = _free_port(), "tok-" + secrets.token_hex(16)
    pool = start_pool(
        "--workers",
        "1",
        "--batch-size",
        "10",
        extra_env={"HEALTH_PORT": str(port), "DASHBOARD_TOKEN": token, "MAX_RETRIES": "1", "POLLING_INTERVAL": "200"},
    )
    doc = wait_until(lambda: _overview(port), timeout=20, message="/api/overview to answer")
    assert doc["database"] == "ok" and doc["actions"] is True and token not in orjson.dumps(doc).decode()
    products_index = _index(doc)
    assert products_index["index"] == "products" and products_index["depth"] == {
        "pending": 0,
        "processing": 0,
        "failed": 0,
        "inbox": 0,
    }
    assert len(products_index["per_minute"]) == 60 and products_index["reindex"] is None

    # The page and its files, from the package, with a policy that keeps them to this origin.
    status, head, html = _request(port, "/")
    assert status == 200 and head["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in head["Content-Security-Policy"] and b'src="/assets/app.js"' in html
    assert b"http" not in html.replace(b"http-equiv", b"")  # nothing fetched from elsewhere
    for path, kind in (("/assets/app.js", "text/javascript"), ("/assets/style.css", "text/css")):
        status, head, _ = _request(port, path)
        assert status == 200 and head["Content-Type"].startswith(kind), path

    # Algolia rejects every record (a 400, down to single records): they fail for good, with its error.
    emulator.inject_fault(status=400, writes_only=True)
    _insert(db, 1, 3)
    wait_until(lambda: len(_failed(db)) == 3, message="three failed rows")
    emulator.clear_faults()
    failed = _failed(db)
    doc = wait_until(
        lambda: (lambda d: d if d and _index(d)["depth"]["failed"] == 3 else None)(_overview(port)),
        message="the overview to show the failures",
    )
    index = _index(doc)
    assert [(r["id"], r["record_id"], r["last_error"]) for r in index["failed_rows"]] == failed
    assert all(r["last_error"] for r in index["failed_rows"])
    log_failed = db.execute("SELECT count(*) FROM algolia_sync_log WHERE status = 'failed'").fetchone()[0]
    assert sum(m["failed"] for m in index["per_minute"]) == log_failed == 3
    live = db.execute("SELECT worker_id, host, pid FROM algolia_sync_workers").fetchall()
    assert [(w["worker_id"], w["host"], w["pid"]) for w in doc["workers"]] == live and len(live) == 1
    # Vacuum health of the hot tables, as `stats` reports it.
    vac = doc["vacuum"]
    assert {t["table"] for t in vac["tables"]} == {
        "algolia_sync_queue",
        "algolia_sync_inbox",
        "algolia_sync_hashes",
        "algolia_sync_log_batches",
    }
    assert all(t["size_bytes"] > 0 and t["live_tuples"] >= 0 and t["dead_tuples"] >= 0 for t in vac["tables"])
    assert vac["autovacuum"] is (db.execute("SHOW autovacuum").fetchone()[0] == "on")  # reported as it is

    # Many viewers at once share refreshes: every answer carries the number of the query set it came
    # from, and a burst of 16 concurrent requests is served by a few of them (one, or two when the
    # burst straddles the 1.5 s cache).
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(_overview(port))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 16 and all(answers)
    assert len({a["refresh"] for a in answers}) <= 3, sorted(a["refresh"] for a in answers)

    # The dashboard's one connection is killed: that refresh says so (503), a later one reconnects.
    before = answers[0]["refresh"]
    killed = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'workerpool:dashboard' AND datname = current_database()"
    ).fetchone()[0]
    assert killed == 1
    statuses = []

    def recovered() -> dict | None:
        status, _, body = _request(port, "/api/overview")
        statuses.append(status)
        doc = orjson.loads(body)
        assert status in (200, 503) and doc["database"] == ("ok" if status == 200 else "unreachable"), doc
        return doc if status == 200 and doc["refresh"] > before + 1 else None

    wait_until(recovered, message="the dashboard to reconnect")
    assert 503 in statuses
    assert (
        db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'workerpool:dashboard' "
            "AND datname = current_database()"
        ).fetchone()[0]
        == 1
    )

    # Actions need the token: none, another scheme or a wrong one are refused and change nothing.
    for given in (None, "", "not-the-token-at-all"):
        status, head, body = _retry(port, {"ids": [failed[0][0]]}, token=given)
        assert status == 401 and "WWW-Authenticate" in head and "bearer" in body["error"].lower(), (given, body)
    status, _, _ = _request(
        port, "/api/retry", "POST", b"{}", {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    )
    assert status == 401
    assert len(_failed(db)) == 3
    assert _request(port, "/api/retry")[0] == 405
    assert _request(port, "/api/overview", "POST", b"{}", {"Authorization": f"Bearer {token}"})[0] == 405

    # Bad input: one line naming the bad value and what is expected.
    assert _retry(port, {}, token, content_type="text/plain")[0] == 415
    status, _, body = _retry(port, None, token, raw=b"{nope")
    assert status == 400 and "not JSON" in body["error"]
    status, _, body = _retry(port, {"ids": ["7"]}, token)
    assert status == 400 and 'ids=["7"]' in body["error"] and "positive row ids" in body["error"]
    for bad in ({}, {"ids": None}, {"everything": True}):
        status, _, body = _retry(port, bad, token)
        assert status == 400 and "expected" in body["error"], bad
    assert len(_failed(db)) == 3

    # With the token: one row by id, then the rest of the table; they sync.
    status, _, body = _retry(port, {"ids": [failed[0][0]]}, token)
    assert status == 200 and body == {"returned": 1}
    wait_until(lambda: queue_counts(db) == {"failed": 2}, message="the retried row to sync")
    assert set(emulator.records("products")) == {failed[0][1]}
    status, _, body = _retry(port, {"table": "products"}, token)
    assert status == 200 and body == {"returned": 2}
    wait_until(lambda: not queue_counts(db), message="the table's failed rows to sync")
    assert_index_matches(db, emulator, "products", "products")
    doc = wait_until(
        lambda: (lambda d: d if d and _index(d)["depth"]["failed"] == 0 else None)(_overview(port)),
        message="the overview to show no failure",
    )
    assert _index(doc)["failed_rows"] == []
    assert (
        sum(m["synced"] for m in _index(doc)["per_minute"])
        == db.execute("SELECT count(*) FROM algolia_sync_log WHERE status = 'success'").fetchone()[0]
        == 3
    )
    assert [e["returned"] for e in pool.lines("dashboard_retry")] == [1, 2]

    # A reindex in progress shows its progress while it holds its lock. It is held up on key 7 by
    # an uncommitted pending row of that key (another session's), after two chunks of 3 keys.
    _insert(db, 4, 12)
    wait_until(lambda: not queue_counts(db), message="the new rows to sync")
    with psycopg.connect(env["DATABASE_URL"]) as blocker:
        blocker.execute(
            "INSERT INTO algolia_sync_queue (table_name, record_id, operation) VALUES ('products', '7', 'UPDATE')"
        )
        reindex = subprocess.Popen(
            workerpool_cmd("reindex", "products", "--chunk-size", "3"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
        )
        try:
            doc = wait_until(
                lambda: (lambda d: d if d and _index(d)["reindex"] else None)(_overview(port)),
                message="the reindex to show up",
            )
            progress = _index(doc)["reindex"]
            assert progress["mode"] == "queue" and progress["running"] is True and progress["rows_total"] == 12
            assert progress["rows_done"] == 6, progress
        finally:
            blocker.rollback()
        out, err = reindex.communicate(timeout=60)
    assert reindex.returncode == 0, out + err
    doc = wait_until(
        lambda: (lambda d: d if d and _index(d)["reindex"] is None else None)(_overview(port)),
        message="the finished reindex to disappear",
    )
    assert pool.stop() == 0
    assert token not in pool.output

    # No token configured: every action is refused with 403, whatever the request carries.
    port = _free_port()
    pool = start_pool("--workers", "1", extra_env={"HEALTH_PORT": str(port)})
    doc = wait_until(lambda: _overview(port), timeout=20, message="/api/overview to answer")
    assert doc["actions"] is False
    status, _, body = _retry(port, {"table": "products"}, token)
    assert status == 403 and "DASHBOARD_TOKEN is not set" in body["error"]
    assert pool.stop() == 0


def test_a_bad_dashboard_token_stops_start_up_without_echoing_it(env):
    for bad, why in (("short-secret", "too short"), ("has a space in the middle!", "space")):
        result = run_cli({**env, "HEALTH_PORT": str(_free_port()), "DASHBOARD_TOKEN": bad}, "run", timeout=30)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.count("\n") == 1 and "DASHBOARD_TOKEN" in result.stderr and why in result.stderr
        assert bad not in result.stderr + result.stdout


# ---- the page in a real headless Chromium --------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    """Debian's Chromium through its own chromedriver; selenium downloads nothing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} not installed (Debian's chromium and chromium-driver; .ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1280,1200",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")), options=options
    )
    try:
        yield driver
    finally:
        driver.quit()


_SHOWN = """
const card = document.querySelector('[data-table="products"]');
const status = document.querySelector('#status');
if (!card) return null;
const out = {updated: parseFloat(status.dataset.updated || '0'), database: status.dataset.database || null};
card.querySelectorAll('[data-depth]').forEach(
  e => out[e.dataset.depth] = parseInt(e.textContent.replace(/,/g, ''), 10));
const chart = card.querySelector('.chart svg');
out.chart_synced = chart ? parseInt(chart.dataset.synced, 10) : null;
out.failed_rows = Array.from(card.querySelectorAll('.failures tbody tr')).map(tr => ({
  id: parseInt(tr.dataset.id, 10), key: tr.dataset.key, error: tr.querySelector('.error-text').textContent}));
out.failures_visible = !card.querySelector('.failures').hidden;
out.workers = Array.from(document.querySelectorAll('#workers tbody tr')).map(tr => tr.dataset.worker);
out.vacuum_tables = Array.from(document.querySelectorAll('#vacuum tbody tr')).map(tr => tr.dataset.table);
out.message = document.querySelector('#message').hidden ? '' : document.querySelector('#message').textContent;
return out;
"""


def _total(shown: dict | None) -> int:
    return sum(shown[s] for s in ("pending", "inbox", "processing")) if shown else -1


@pytest.mark.slow
def test_dashboard_in_chromium_shows_the_queue_fill_and_drain_and_retries_a_failed_row(
    products, env, emulator, start_pool, browser, tmp_path
):
    from selenium.webdriver.common.by import By

    db = products
    port, token = _free_port(), "tok-" + secrets.token_hex(16)
    # One request on the wire at a time: the queue must visibly wait behind the slow writes below.
    pool = start_pool(
        "--workers",
        "1",
        "--batch-size",
        "5",
        extra_env={
            "HEALTH_PORT": str(port),
            "DASHBOARD_TOKEN": token,
            "MAX_RETRIES": "1",
            "POLLING_INTERVAL": "200",
            "REQUESTS_IN_FLIGHT": "1",
        },
    )
    wait_until(lambda: _overview(port), timeout=20, message="/api/overview to answer")
    browser.get(f"http://127.0.0.1:{port}/")
    shown = wait_until(lambda: browser.execute_script(_SHOWN), timeout=20, message="the page to render the index")
    assert shown["database"] == "ok" and _total(shown) == 0 and shown["failed"] == 0
    assert sorted(shown["vacuum_tables"]) == [
        "algolia_sync_hashes",
        "algolia_sync_inbox",
        "algolia_sync_log_batches",
        "algolia_sync_queue",
    ]
    workers = [w for (w,) in db.execute("SELECT worker_id FROM algolia_sync_workers").fetchall()]
    wait_until(lambda: browser.execute_script(_SHOWN)["workers"] == workers, message="the live worker on the page")
    assert browser.find_element(By.ID, "readonly").is_displayed() is False
    assert browser.find_element(By.ID, "token").is_displayed()

    # Every write to Algolia takes 1.5 s, 5 records a batch: rows written in three bursts pile up, and
    # the page shows the queue growing as they are written.
    emulator.inject_fault(latency_ms=1500, writes_only=True)
    seen = []
    for burst in range(3):
        _insert(db, burst * 30 + 1, burst * 30 + 30)
        floor = max(seen, default=0)
        shown = wait_until(
            lambda floor=floor: (lambda s: s if _total(s) > floor else None)(browser.execute_script(_SHOWN)),
            timeout=30,
            message=f"the page to show more than {floor} waiting after burst {burst + 1}",
        )
        seen.append(_total(shown))
    assert seen == sorted(seen) and seen[-1] > seen[0] > 0, seen

    # Algolia is fast again: the page shows the queue draining to 0 and 90 records in the chart.
    emulator.clear_faults()
    wait_until(lambda: not queue_counts(db), timeout=60, message="the queue to drain")
    synced = db.execute("SELECT count(*) FROM algolia_sync_log WHERE status = 'success'").fetchone()[0]
    assert synced == 90
    shown = wait_until(
        lambda: (lambda s: s if _total(s) == 0 and s["chart_synced"] == synced else None)(
            browser.execute_script(_SHOWN)
        ),
        timeout=20,
        message="the page to show the drained queue",
    )
    assert shown["failed"] == 0 and not shown["failures_visible"]
    assert_index_matches(db, emulator, "products", "products")

    # Algolia rejects the record (a 400): the update fails for good and the page lists it with its error.
    emulator.inject_fault(status=400, writes_only=True)
    db.execute("UPDATE products SET stock = 1000 WHERE id = 7")
    wait_until(lambda: len(_failed(db)) == 1, message="the update to fail")
    emulator.clear_faults()
    ((row_id, key, last_error),) = _failed(db)
    shown = wait_until(
        lambda: (lambda s: s if s["failed_rows"] else None)(browser.execute_script(_SHOWN)),
        message="the failed row on the page",
    )
    assert shown["failed"] == 1 and shown["failures_visible"]
    assert shown["failed_rows"] == [{"id": row_id, "key": "7", "error": last_error}]
    _screenshot(browser, tmp_path)

    # The retry button without the token, then with a wrong one: refused, and the row stays failed.
    def click_retry() -> None:  # the rows are redrawn on every refresh: find the button afresh
        browser.find_element(By.CSS_SELECTOR, f'button.retry[data-id="{row_id}"]').click()

    click_retry()
    wait_until(lambda: "refused (401)" in browser.execute_script(_SHOWN)["message"], message="the refusal")
    field = browser.find_element(By.ID, "token")
    field.send_keys("wrong-token-wrong-token")
    click_retry()
    wait_until(lambda: "does not match" in browser.execute_script(_SHOWN)["message"], message="the wrong token refused")
    assert _failed(db) == [(row_id, key, last_error)]

    # With the token: the row goes back to the queue, syncs, and the page shows no failure.
    field.clear()
    field.send_keys(token)
    click_retry()
    wait_until(lambda: "returned 1 failed row(s)" in browser.execute_script(_SHOWN)["message"], message="the retry")
    wait_until(lambda: not queue_counts(db), message="the retried row to sync")
    assert emulator.records("products")["7"]["stock"] == 1000
    wait_until(
        lambda: (
            lambda s: s["failed"] == 0 and not s["failures_visible"] and _total(s) == 0 and s["chart_synced"] == 91
        )(browser.execute_script(_SHOWN)),
        message="the page to show the row synced and no failure",
    )
    assert token not in browser.page_source and token not in pool.output
    # No script error and no Content-Security-Policy violation; the refused retries are the only failed loads.
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors and all("/api/retry" in e and "401" in e for e in errors), errors
    assert pool.stop() == 0


def _screenshot(browser, tmp_path: Path) -> None:
    """A PNG of the page; copied to WORKERPOOL_DASHBOARD_SCREENSHOT (e.g. docs/dashboard.png) when set."""
    path = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(path))
    png = path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    target = os.environ.get("WORKERPOOL_DASHBOARD_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_bytes(png)


def test_the_wheel_ships_the_dashboard_files(tmp_path):
    """The page is served from package data: a built wheel must carry it (and the schema it reads)."""
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("workerpool-*.whl")
    listed = zipfile.ZipFile(wheel).namelist()
    names = set(listed)
    for name in ("index.html", "app.js", "style.css"):
        assert f"workerpool/observability/dashboard/static/{name}" in names
    # The top-level sql/ (the one copy in git) is shipped as the package's workerpool/db/sql/, each file once.
    shipped = sorted(n.removeprefix("workerpool/db/sql/") for n in listed if n.startswith("workerpool/db/sql/"))
    expected = sorted(str(p.relative_to(root / "sql")) for p in (root / "sql").rglob("*") if p.is_file())
    assert shipped == expected
    for name in ("schema.sql", "queries.sql", "migrations/001_schema.sql"):
        assert f"workerpool/db/sql/{name}" in names


def test_the_chart_counts_the_last_hour_in_steps_and_then_only_the_recent_minutes(db):
    """However long the log, a refresh counts at most ~12 minutes of it: the first the last ten, each
    next one ten more of the past until the hour is complete, and from then on the last two minutes.
    The counts always equal the log's."""
    from workerpool.observability.dashboard.overview import (
        MINUTES,
        MinuteSeries,
        collect,
    )

    db.execute(
        "INSERT INTO algolia_index_config (table_name, index_name, key_column, key_type) "
        "VALUES ('products', 'products', 'id', 'integer')"
    )
    # One acknowledgement every 5 s over the last 70 minutes, every 7th a failure.
    db.execute("""INSERT INTO algolia_sync_log (table_name, record_id, operation, status, enqueued_at, synced_at)
                  SELECT 'products', g::text, 'UPDATE', CASE WHEN g % 7 = 0 THEN 'failed' ELSE 'success' END,
                         now() - g * interval '5 s' - interval '1 s', now() - g * interval '5 s'
                    FROM generate_series(0, 840) g""")

    def truth(now_minute: int) -> dict[int, tuple[int, int]]:
        rows = db.execute(
            """SELECT extract(epoch FROM date_trunc('minute', synced_at))::bigint,
                      count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'failed')
                 FROM algolia_sync_log WHERE synced_at >= to_timestamp(%s) GROUP BY 1""",
            (now_minute - (MINUTES - 1) * 60,),
        ).fetchall()
        return {m: (s, f) for m, s, f in rows}

    series = MinuteSeries()
    spans = []
    for _ in range(7):
        minute = int(db.execute("SELECT extract(epoch FROM date_trunc('minute', now()))").fetchone()[0])
        spans.append((minute, series.ranges(minute)))
        doc = collect(db, series)
        now_minute = doc["indices"][0]["per_minute"][-1]["t"]
        known = {
            m["t"]: (m["synced"], m["failed"])
            for m in doc["indices"][0]["per_minute"]
            if m["t"] >= doc["chart_counted_from"]
        }
        expected = truth(now_minute)
        assert known == {t: expected.get(t, (0, 0)) for t in known}
    assert doc["chart_counted_from"] == now_minute - (MINUTES - 1) * 60  # the whole hour, after six refreshes
    assert sum(s for s, _ in known.values()) == sum(s for s, _ in truth(now_minute).values()) > 0
    counted = [sum(min(end, minute + 60) - start for start, end in refresh) / 60 for minute, refresh in spans]
    assert max(counted) <= 12 and counted[-1] <= 2, counted

    # New acknowledgements show up in the next refresh.
    db.execute("""INSERT INTO algolia_sync_log (table_name, record_id, operation, status, synced_at)
                  SELECT 'products', g::text, 'UPDATE', 'success', now() FROM generate_series(1, 25) g""")
    doc = collect(db, series)
    now_minute = doc["indices"][0]["per_minute"][-1]["t"]
    expected = truth(now_minute)
    assert {m["t"]: (m["synced"], m["failed"]) for m in doc["indices"][0]["per_minute"]} == {
        t: expected.get(t, (0, 0)) for t in range(now_minute - (MINUTES - 1) * 60, now_minute + 60, 60)
    }
    assert expected[now_minute][0] >= 25
