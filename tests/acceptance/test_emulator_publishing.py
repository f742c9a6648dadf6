"""The emulator's asynchronous index: with a publish delay, a record write is acknowledged with its
taskID at once and readable only once that task is published, tasks of one index publishing in
order. Driven by the real algoliasearch v4 client over real HTTP (no mocks)."""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from algoliasearch.http.exceptions import RequestException

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workerpool.emulator import Emulator, make_client  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server():
    emu = Emulator().start()
    yield emu
    emu.stop()


@pytest.fixture
def em(server):
    """The shared emulator, emptied (indices, counters, faults, delays, task log) for each test."""
    server.reset()
    yield server
    server.reset()


@pytest.fixture
def client(em):
    c = make_client(em.url, em.app_id, em.api_key)
    yield c
    c.close()


def status(client, index, task_id):
    return client.get_task(index, task_id).status


def wait_published(client, index, task_id, timeout=15.0):
    """Poll the task until it is published; returns the monotonic time it was first seen so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if status(client, index, task_id) == "published":
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} of {index} not published after {timeout}s")


def auth(em):
    return {"x-algolia-application-id": em.app_id, "x-algolia-api-key": em.api_key}


def raw_task(em, index, task_id):
    """The task as the emulator answers it (the client's model drops ``pendingTask``)."""
    return requests.get(f"{em.url}/1/indexes/{index}/task/{task_id}", headers=auth(em)).json()


def get_or_none(client, index, oid):
    try:
        return client.get_object(index, oid)
    except RequestException as exc:
        assert exc.status_code == 404
        return None


def browse_ids(client, index):
    return sorted(h.object_id for h in client.browse(index).hits)


def adds(records):
    return {"requests": [{"action": "addObject", "body": r} for r in records]}


# ---------------------------------------------------------------------------------------------
# One write, read before and after its task publishes
# ---------------------------------------------------------------------------------------------


def test_a_new_record_is_unreadable_until_its_task_is_published(em, client):
    client.save_object("pub", {"objectID": "seed"})  # the index exists, so reads answer 200
    em.set_publish_delay(1500)
    started = time.monotonic()
    resp = client.batch("pub", adds([{"objectID": "a", "title": "fresh"}]))
    assert raw_task(em, "pub", resp.task_id) == {"status": "notPublished", "pendingTask": True}
    assert client.get_task("pub", resp.task_id).status == "notPublished"
    assert get_or_none(client, "pub", "a") is None
    assert client.get_objects({"requests": [{"indexName": "pub", "objectID": "a"}]}).results == [None]
    assert browse_ids(client, "pub") == ["seed"]
    assert client.search_single_index("pub", {"query": "fresh"}).nb_hits == 0
    assert em.records("pub") == {"seed": {"objectID": "seed"}}
    assert requests.get(f"{em.url}/_emulator/indexes/pub").json() == {"seed": {"objectID": "seed"}}
    assert em.stats()["indices"] == {"pub": 1}
    listed = client.list_indices().items[0]
    assert listed.entries == 1 and listed.number_of_pending_tasks == 1 and listed.pending_task is True

    seen = wait_published(client, "pub", resp.task_id)
    assert seen - started >= 1.5
    assert raw_task(em, "pub", resp.task_id) == {"status": "published", "pendingTask": False}
    assert requests.get(f"{em.url}/1/task/{resp.task_id}", headers=auth(em)).json()["status"] == "published"
    assert client.get_object("pub", "a") == {"objectID": "a", "title": "fresh"}
    assert browse_ids(client, "pub") == ["a", "seed"]
    assert [h.object_id for h in client.search_single_index("pub", {"query": "fresh"}).hits] == ["a"]
    assert set(em.records("pub")) == {"a", "seed"} and em.stats()["indices"] == {"pub": 2}
    assert client.list_indices().items[0].number_of_pending_tasks == 0


def test_updates_show_the_old_record_and_a_delete_keeps_it_until_published(em, client):
    client.batch("upd", adds([{"objectID": "a", "v": 1}, {"objectID": "b", "v": 1}, {"objectID": "c", "v": 1}]))
    em.set_publish_delay(1200)
    put = client.add_or_update_object("upd", "a", {"v": 2})
    part = client.partial_update_object("upd", "b", {"v": {"_operation": "Increment", "value": 5}})
    gone = client.delete_object("upd", "c")
    for task_id in (put.task_id, part.task_id, gone.task_id):
        assert status(client, "upd", task_id) == "notPublished"
    assert em.records("upd") == {
        "a": {"objectID": "a", "v": 1},
        "b": {"objectID": "b", "v": 1},
        "c": {"objectID": "c", "v": 1},
    }
    assert client.get_object("upd", "c") == {"objectID": "c", "v": 1}
    assert browse_ids(client, "upd") == ["a", "b", "c"]
    assert em.stats()["indices"] == {"upd": 3}

    wait_published(client, "upd", gone.task_id)
    assert em.records("upd") == {"a": {"objectID": "a", "v": 2}, "b": {"objectID": "b", "v": 6}}
    assert get_or_none(client, "upd", "c") is None
    assert browse_ids(client, "upd") == ["a", "b"] and em.stats()["indices"] == {"upd": 2}


def test_a_browse_walks_the_published_records_while_writes_are_pending(em, client):
    client.batch("walk", adds([{"objectID": f"r{i:02d}", "v": 1} for i in range(30)]))
    em.set_publish_delay(1500)
    first = client.browse("walk", {"hitsPerPage": 10})
    assert [h.object_id for h in first.hits] == [f"r{i:02d}" for i in range(10)] and first.cursor
    client.delete_object("walk", "r15")
    client.partial_update_object("walk", "r25", {"v": 2})
    last = client.save_object("walk", {"objectID": "r99"}).task_id
    hits = []
    cursor = first.cursor
    while cursor:
        page = client.browse("walk", {"hitsPerPage": 10, "cursor": cursor})
        hits += [h.to_dict() for h in page.hits]
        cursor = page.cursor
    assert [h["objectID"] for h in hits] == [f"r{i:02d}" for i in range(10, 30)]
    assert all(h["v"] == 1 for h in hits)

    wait_published(client, "walk", last)  # and so the two before it
    ids = []
    client.browse_objects("walk", aggregator=lambda resp: ids.extend(h.object_id for h in resp.hits))
    assert "r15" not in ids and "r99" in ids and len(ids) == 30
    assert client.get_object("walk", "r25")["v"] == 2


# ---------------------------------------------------------------------------------------------
# Queues: order, per-record cost, one queue per index
# ---------------------------------------------------------------------------------------------


def test_writes_to_one_record_become_readable_in_order(em, client):
    em.set_publish_delay(0, per_record_ms=700)  # one record per task: each task 0.7 s after the previous
    tasks = [client.add_or_update_object("seq", "k", {"v": v}).task_id for v in (1, 2, 3)]
    seen: list[int | None] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        rec = get_or_none(client, "seq", "k")
        seen.append(None if rec is None else rec["v"])
        statuses = [status(client, "seq", t) for t in tasks]
        # a later task is never published before an earlier one
        assert statuses == sorted(statuses, key=lambda s: s != "published"), statuses
        if seen[-1] == 3:
            break
        time.sleep(0.02)
    values = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
    assert values == [None, 1, 2, 3], values


def test_a_burst_queues_up_with_the_per_record_delay(em, client):
    em.set_publish_delay(300, per_record_ms=20)
    tasks = [client.batch("burst", adds([{"objectID": f"{b}-{i}"} for i in range(10)])).task_id for b in range(5)]
    other = client.batch("other", adds([{"objectID": "x"}])).task_id  # another index: its own queue
    wait_published(client, "other", other)
    log = {e["task_id"]: e for e in em.task_log()}
    assert log[other]["published_at"] == pytest.approx(log[other]["accepted_at"] + 0.32, abs=1e-3)  # not behind burst

    wait_published(client, "burst", tasks[-1])
    entries = em.task_log("burst")
    assert [e["task_id"] for e in entries] == tasks and {e["index"] for e in entries} == {"burst"}
    assert all(e["records"] == 10 for e in entries)
    first, last = entries[0], entries[-1]
    assert first["published_at"] == pytest.approx(first["accepted_at"] + 0.3 + 10 * 0.02, abs=1e-3)
    gaps = [b["published_at"] - a["published_at"] for a, b in itertools.pairwise(entries)]
    assert all(gap >= 0.2 - 1e-6 for gap in gaps), gaps  # each task waits for the one before it
    assert last["published_at"] - first["accepted_at"] >= 0.3 + 50 * 0.02 - 1e-6
    assert len(em.records("burst")) == 50


def test_task_log_of_every_record_write_route(em, client):
    em.set_publish_delay(400)
    before = time.time()
    client.save_object("log", {"objectID": "s"})
    client.add_or_update_object("log", "u", {"v": 1})
    client.partial_update_object("log", "u", {"w": 1})
    client.delete_object("log", "s")
    client.multiple_batch({"requests": [{"action": "addObject", "indexName": n, "body": {}} for n in ("log", "m")]})
    after = time.time()

    entries = em.task_log()
    assert [(e["index"], e["records"]) for e in entries] == [("log", 1)] * 5 + [("m", 1)]
    assert all(before <= e["accepted_at"] <= after and e["published_at"] is None for e in entries)
    assert requests.get(f"{em.url}/_emulator/tasks").json() == {"tasks": entries}
    assert requests.get(f"{em.url}/_emulator/tasks/m").json() == {"tasks": entries[-1:]}
    assert em.task_log("nothing") == []

    wait_published(client, "log", entries[-2]["task_id"])
    wait_published(client, "m", entries[-1]["task_id"])
    for e in em.task_log():
        assert e["published_at"] == pytest.approx(e["accepted_at"] + 0.4, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Without a delay, index-level operations, the other delay, the hooks
# ---------------------------------------------------------------------------------------------


def test_no_delay_publishes_at_once_and_reset_turns_the_delay_off(em, client):
    em.set_publish_delay(5000, 5)
    em.reset()
    resp = client.batch("now", adds([{"objectID": "a"}]))
    assert status(client, "now", resp.task_id) == "published"
    assert client.get_object("now", "a") == {"objectID": "a"} and set(em.records("now")) == {"a"}
    [entry] = em.task_log()
    assert entry["task_id"] == resp.task_id and entry["published_at"] == entry["accepted_at"]
    assert client.list_indices().items[0].pending_task is False


def test_clear_delete_copy_are_immediate_and_a_move_takes_pending_writes_along(em, client):
    client.batch("live", adds([{"objectID": "old"}]))
    client.batch("copied", adds([{"objectID": "r1", "from": "copied"}]))
    em.set_publish_delay(1500)
    pending = client.batch("live", adds([{"objectID": "new"}])).task_id
    cleared = client.clear_objects("live")
    assert em.records("live") == {} and status(client, "live", pending) == "published"

    tmp = client.batch("tmp", adds([{"objectID": "r1"}, {"objectID": "r2"}])).task_id
    overwritten = client.add_or_update_object("copied", "r1", {"from": "pending"}).task_id
    client.operation_index("tmp", {"operation": "copy", "destination": "copied"})
    # a copy waits for the source's writes, and replaces the destination with its pending ones
    assert em.records("copied") == {"r1": {"objectID": "r1"}, "r2": {"objectID": "r2"}}
    assert status(client, "copied", overwritten) == "published"
    client.operation_index("tmp", {"operation": "move", "destination": "live"})
    assert em.records("live") == {} and status(client, "live", tmp) == "notPublished"
    wait_published(client, "live", tmp)
    assert set(em.records("live")) == {"r1", "r2"}
    assert status(client, "live", cleared.task_id) == "published"

    doomed = client.batch("doomed", adds([{"objectID": "d"}])).task_id
    client.delete_index("doomed")
    assert status(client, "doomed", doomed) == "published" and em.records("doomed") == {}

    em.set_publish_delay(0)
    client.batch("inbatch", adds([{"objectID": "x", "v": 1}]))
    em.set_publish_delay(1500)
    update = client.add_or_update_object("inbatch", "x", {"v": 2}).task_id
    assert em.records("inbatch") == {"x": {"objectID": "x", "v": 1}}
    batched = client.batch(  # a clear inside a batch is immediate too
        "inbatch", {"requests": [{"action": "clear", "body": {}}, {"action": "addObject", "body": {"objectID": "z"}}]}
    )
    assert em.records("inbatch") == {} and status(client, "inbatch", update) == "published"
    assert status(client, "inbatch", batched.task_id) == "notPublished"
    wait_published(client, "inbatch", batched.task_id)
    assert set(em.records("inbatch")) == {"z"}


def test_task_delay_and_publish_delay_each_hold_their_tasks(em, client):
    em.set_task_delay(1.0)  # a slow copy/move; record writes are not held by it
    write = client.batch("both", adds([{"objectID": "a"}])).task_id
    assert status(client, "both", write) == "published"
    copy = client.operation_index("both", {"operation": "copy", "destination": "both2"}).task_id
    assert status(client, "both2", copy) == "notPublished"
    em.set_publish_delay(1000)
    held = client.batch("both", adds([{"objectID": "b"}])).task_id
    assert status(client, "both", held) == "notPublished"
    wait_published(client, "both2", copy)
    wait_published(client, "both", held)
    assert set(em.records("both")) == {"a", "b"}


def test_publish_delay_hook_and_its_validation(em, client):
    base = f"{em.url}/_emulator"
    r = requests.post(f"{base}/publish-delay", json={"delay_ms": 800, "per_record_ms": 2.5})
    assert r.status_code == 200 and r.json() == {"ok": True, "delay_ms": 800.0, "per_record_ms": 2.5}
    task = client.save_object("hook", {"objectID": "a"}).task_id
    assert status(client, "hook", task) == "notPublished" and em.records("hook") == {}
    for bad in ({"delay_ms": -1}, {"delay_ms": "5"}, {"delay_ms": True}, {"per_record_ms": -0.5}, [1]):
        r = requests.post(f"{base}/publish-delay", json=bad)
        assert r.status_code == 400 and "Invalid publish delay" in r.json()["message"], bad
    for bad_args in ((-1,), (math.nan,), (math.inf,), (1, -1), ("1",)):
        with pytest.raises(ValueError):
            em.set_publish_delay(*bad_args)
    assert requests.post(f"{base}/publish-delay", json={}).json()["delay_ms"] == 0.0
    now = client.save_object("hook", {"objectID": "b"}).task_id  # no delay, but queued behind "a"
    assert status(client, "hook", now) == "notPublished"
    wait_published(client, "hook", now)
    assert status(client, "hook", task) == "published" and set(em.records("hook")) == {"a", "b"}


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_module(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "workerpool.emulator", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_publish_delay_flags():
    proc = _run_module("--port", str(_free_port()), "--publish-delay-ms", "700", "--publish-ms-per-record", "100")
    try:
        line = json.loads(proc.stdout.readline())
        assert line["publish_delay_ms"] == 700 and line["publish_ms_per_record"] == 100
        c = make_client(line["url"], "EMULATOR", "emulator-admin-key")
        started = time.monotonic()
        task = c.batch("cli", adds([{"objectID": "1"}, {"objectID": "2"}, {"objectID": "3"}])).task_id
        assert status(c, "cli", task) == "notPublished"
        assert wait_published(c, "cli", task) - started >= 1.0
        tasks = requests.get(f"{line['url']}/_emulator/tasks/cli").json()["tasks"]
        assert tasks[0]["published_at"] == pytest.approx(tasks[0]["accepted_at"] + 1.0, abs=1e-3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "args", [("--publish-delay-ms", "-5"), ("--publish-delay-ms", "soon"), ("--publish-ms-per-record", "inf")]
)
def test_cli_rejects_a_bad_publish_delay(args):
    proc = _run_module("--port", "0", *args)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and "milliseconds, 0 or more" in lines[0], err
