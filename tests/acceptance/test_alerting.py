"""The operators' files for Prometheus and Grafana, against the real tools and a running supervisor.

- deploy/prometheus/workerpool-alerts.yml passes `promtool check rules` and its unit tests
  (workerpool-alerts.test.yml, `promtool test rules`), and those tests fail when a rule is broken;
- a real Prometheus server (Debian's `prometheus`, which `bash .ci/run` installs) scrapes a running
  `workerpool run`, loads the rules, and answers a synced-records query through its HTTP API;
- deploy/grafana/workerpool.json and the rules reference only metrics that a supervisor exports.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request

import pytest

from testing import ROOT, queue_counts, wait_until

RULES = ROOT / "deploy" / "prometheus" / "workerpool-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "workerpool-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "workerpool.json"
# Exported by the vacuum checks of another change (issue 17): the rules may name them before a
# supervisor of this branch exports them; once it does, they are checked like every other name.
VACUUM_METRICS = {"workerpool_table_dead_tuples", "workerpool_table_live_tuples", "workerpool_xmin_horizon_age_seconds"}
METRIC_NAME = re.compile(r"\b(workerpool_[a-z0-9_]+)\b")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed: `bash .ci/run` installs Debian's prometheus package, which has it")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return 0, ""


def _rule_exprs() -> list[str]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return [t["expr"] for p in panels for t in p["targets"]]


def test_alert_rules_pass_promtool_and_their_unit_tests_which_catch_a_broken_rule(tmp_path):
    promtool = _tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 12 rules found" in check.stdout, check.stdout + check.stderr
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=RULES.parent, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    # The unit tests can fail: a backlog threshold of 100 minutes instead of 10 is caught.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    broken = RULES.read_text().replace(
        "workerpool_last_ack_timestamp_seconds)) > 600", "workerpool_last_ack_timestamp_seconds)) > 6000"
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "WorkerpoolBacklogNotMoving" in result.stdout + result.stderr


def test_grafana_dashboard_parses_and_opens_on_the_on_call_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # The first row, what on-call looks at first: is it syncing, how far behind, what is broken.
    first_row = [p["title"] for p in panels if p["gridPos"]["y"] == 1]
    assert first_row == [
        "Backlog",
        "Oldest pending",
        "Since last ack",
        "Failed rows",
        "Workers alive / wanted",
        "Database / Algolia auth",
    ]
    for panel in panels:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        assert all('job=~"$job"' in t["expr"] for t in panel["targets"]), panel["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job"}


def _sample_names(metrics_text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines() if line and not line.startswith("#")}


@pytest.mark.slow
def test_prometheus_scrapes_a_supervisor_loads_the_rules_and_reads_back_synced_records(
    products, env, emulator, start_pool, tmp_path
):
    prometheus = _tool("prometheus")
    db = products
    port = _free_port()
    pool = start_pool(
        "--workers",
        "2",
        "--batch-size",
        "20",
        extra_env={
            "HEALTH_PORT": str(port),
            "MAX_RECORD_BYTES": "2000",
            "RETRY_BACKOFF": "100",
            "RETRY_BACKOFF_MAX": "200",
            "POLLING_INTERVAL": "200",
        },
    )
    wait_until(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, timeout=30, message="/healthz")

    # Give every metric a reason to exist: syncs, a 429, a 5xx retry, a 403, a record too large to
    # send (failed for good), and a worker that dies and is restarted.
    emulator.state.inject_faults(
        [
            {"status": 429, "retry_after": 0, "count": 1, "writes_only": True},
            {"status": 503, "count": 1, "writes_only": True},
            {"status": 403, "count": 1, "writes_only": True},
        ]
    )
    db.execute("INSERT INTO products (name, price) SELECT 'p' || g, g FROM generate_series(1, 120) g")
    db.execute("INSERT INTO products (name) VALUES (repeat('x', 5000))")
    wait_until(lambda: queue_counts(db) == {"failed": 1}, timeout=60, message="everything but the big record synced")
    victim = pool.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len([p for p in pool.worker_pids() if p != victim]) == 2, timeout=30, message="a replacement")
    status, scraped = _get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    exported = _sample_names(scraped)

    # Every metric the rules and the dashboard use is exported (names of histograms as _bucket etc.).
    used = {m for expr in _rule_exprs() + _dashboard_exprs() for m in METRIC_NAME.findall(expr)}
    pending = VACUUM_METRICS - exported
    missing = sorted(used - exported - pending)
    assert not missing, f"referenced but not exported by a supervisor: {missing}"
    assert "workerpool_algolia_auth_errors_total" in exported
    # Every batch request is counted by its answer: the 429, the 503 and the 403 above, and the accepted ones.
    requests = dict(re.findall(r'^workerpool_algolia_requests_total\{outcome="(\w+)"\} (\S+)$', scraped, re.M))
    assert float(requests["throttled"]) >= 1 and float(requests["failed"]) >= 2, requests
    assert float(requests["accepted"]) == emulator.stats()["batch_requests"], requests

    # A real Prometheus: scrape every second, the rules loaded, storage in a temporary directory.
    web = _free_port()
    shutil.copy(RULES, tmp_path / RULES.name)
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{RULES.name}]\n"
        "scrape_configs:\n"
        f"  - job_name: workerpool\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
    )
    server = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
            "--log.level=warn",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    api = f"http://127.0.0.1:{web}/api/v1"

    def query(promql: str) -> list[dict]:
        status, body = _get(f"{api}/query?{urllib.parse.urlencode({'query': promql})}")
        return json.loads(body)["data"]["result"] if status == 200 else []

    try:
        result = wait_until(
            lambda: query('sum(workerpool_records_synced_total{job="workerpool"})'),
            timeout=60,
            interval=0.5,
            message="Prometheus to scrape the supervisor",
        )
        assert float(result[0]["value"][1]) == 120
        [failed] = query('workerpool_records_failed_total{job="workerpool"}')
        assert failed["metric"]["index"] == "products" and float(failed["value"][1]) == 1
        [depth] = query('workerpool_queue_depth{job="workerpool", table="products", status="failed"}')
        assert float(depth["value"][1]) == 1
        [alive] = query('workerpool_workers{job="workerpool", state="alive"}')
        assert float(alive["value"][1]) == 2
        targets = json.loads(_get(f"{api}/targets")[1])["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets
        # The rules are loaded and evaluate without errors against the live series. A 403 from now on
        # fires the auth alert at once; the big record failed for good may make the failure-rate alert
        # pending (it waits 5 minutes before firing); nothing else is raised.
        emulator.inject_fault(status=403, count=1, writes_only=True)
        db.execute("UPDATE products SET price = price + 1 WHERE id = 1")

        def alerts() -> dict[str, str]:
            return {
                a["labels"]["alertname"]: a["state"] for a in json.loads(_get(f"{api}/alerts")[1])["data"]["alerts"]
            }

        try:
            wait_until(
                lambda: alerts().get("WorkerpoolAlgoliaAuthErrors") == "firing",
                timeout=60,
                interval=0.5,
                message="the auth alert to fire",
            )
        except AssertionError:
            exported_now = re.findall(
                r"^workerpool_algolia_auth_errors_total .*$", _get(f"http://127.0.0.1:{port}/metrics")[1], re.M
            )
            raise AssertionError(
                f"the auth alert did not fire: alerts {alerts()}; auth errors as Prometheus has them "
                f"{query('workerpool_algolia_auth_errors_total[2m]')}; as the supervisor exports them now "
                f"{exported_now}; worker pids {pool.worker_pids()}; queue {queue_counts(db)}; "
                f"emulator {emulator.stats()}; pool: {pool.output[-2500:]}"
            ) from None
        raised = alerts()
        assert raised.pop("WorkerpoolAlgoliaAuthErrors") == "firing"
        assert raised in ({}, {"WorkerpoolFailureRate": "pending"}), raised
        # A 403 spends no attempt: the row waits for the key to work again (the fault was one answer).
        wait_until(lambda: queue_counts(db) == {"failed": 1}, timeout=30, message="the refused row to sync")
    finally:
        server.terminate()
        try:
            out, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, _ = server.communicate()
    assert pool.stop() == 0
    assert server.returncode == 0, out
