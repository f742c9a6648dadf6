"""The Algolia emulator, driven by the real algoliasearch v4 client over real HTTP (no mocks)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from algoliasearch.http.exceptions import (
    AlgoliaUnreachableHostException,
    RequestException,
)

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from workerpool.emulator import Emulator, make_client  # noqa: E402

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server():
    emu = Emulator(max_record_bytes=10_000).start()
    yield emu
    emu.stop()


@pytest.fixture
def em(server):
    """The shared emulator, emptied (indices, counters, faults) for each test."""
    server.reset()
    yield server
    server.clear_faults()


@pytest.fixture
def client(em):
    # A fresh client per test: a 5xx marks the client's only host as down for minutes.
    c = make_client(em.url, em.app_id, em.api_key)
    yield c
    c.close()


def auth(em):
    return {"x-algolia-application-id": em.app_id, "x-algolia-api-key": em.api_key}


def seed(client, index, records):
    client.batch(index, {"requests": [{"action": "addObject", "body": r} for r in records]})


def inc_set(value):
    return {"_operation": "IncrementSet", "value": value}


def inc_from(value):
    return {"_operation": "IncrementFrom", "value": value}


def partial(client, index, body, action="partialUpdateObject"):
    return client.batch(index, {"requests": [{"action": action, "body": body}]})


# ---------------------------------------------------------------------------------------------
# Writes
# ---------------------------------------------------------------------------------------------


def test_multiple_batch_every_action(em, client):
    seed(client, "mb2", [{"objectID": "x"}, {"objectID": "y"}])
    seed(client, "mb3", [{"objectID": "z"}])
    resp = client.multiple_batch(
        {
            "requests": [
                {"action": "addObject", "indexName": "mb1", "body": {"objectID": "1", "a": 1}},
                {"action": "addObject", "indexName": "mb1", "body": {"a": 2}},
                {"action": "updateObject", "indexName": "mb1", "body": {"objectID": "3", "a": 3}},
                {"action": "partialUpdateObject", "indexName": "mb1", "body": {"objectID": "4", "x": 1}},
                {"action": "partialUpdateObjectNoCreate", "indexName": "mb1", "body": {"objectID": "5", "x": 1}},
                {"action": "partialUpdateObjectNoCreate", "indexName": "mb1", "body": {"objectID": "1", "b": 2}},
                {"action": "deleteObject", "indexName": "mb1", "body": {"objectID": "3"}},
                {"action": "updateObject", "indexName": "mb1", "body": {"objectID": "1", "c": 3}},
                {"action": "clear", "indexName": "mb2"},
                {"action": "delete", "indexName": "mb3"},
            ]
        }
    )

    assert set(resp.task_id) == {"mb1", "mb2", "mb3"}
    assert all(isinstance(t, int) for t in resp.task_id.values())
    generated = resp.object_ids[1]
    assert isinstance(generated, str) and generated
    assert resp.object_ids == ["1", generated, "3", "4", "5", "1", "3", "1"]

    assert em.records("mb1") == {
        "1": {"objectID": "1", "c": 3},  # updateObject replaced the partially updated record
        generated: {"objectID": generated, "a": 2},
        "4": {"objectID": "4", "x": 1},
    }
    assert em.records("mb2") == {}
    names = {i.name: i.entries for i in client.list_indices().items}
    assert names == {"mb1": 3, "mb2": 0}  # mb2 cleared but kept, mb3 deleted
    stats = em.stats()
    assert stats["record_writes"] == {"mb1": 8, "mb2": 2, "mb3": 1}
    assert stats["ignored_writes"] == 1  # the NoCreate on a missing record


def test_batch_on_one_index(em, client):
    resp = client.batch(
        "one",
        {
            "requests": [
                {"action": "addObject", "body": {"objectID": "a", "v": 1}},
                {"action": "updateObject", "body": {"objectID": "b", "v": 2}},
                {"action": "partialUpdateObject", "body": {"objectID": "a", "w": 3}},
                {"action": "deleteObject", "body": {"objectID": "b"}},
            ]
        },
    )
    assert isinstance(resp.task_id, int)
    assert resp.object_ids == ["a", "b", "a", "b"]
    assert em.records("one") == {"a": {"objectID": "a", "v": 1, "w": 3}}
    assert client.wait_for_task("one", resp.task_id).status == "published"


def test_single_record_endpoints_and_helpers(em, client):
    saved = client.save_object("single", {"name": "auto"})
    assert saved.object_id and saved.task_id
    client.add_or_update_object("single", "k1", {"name": "one"})
    client.partial_update_object("single", "k1", {"n": {"_operation": "Increment", "value": 2}})
    client.partial_update_object("single", "ghost", {"n": 1}, create_if_not_exists=False)
    client.delete_object("single", saved.object_id)
    assert em.records("single") == {"k1": {"objectID": "k1", "name": "one", "n": 2}}

    responses = client.save_objects("helper", [{"objectID": str(i), "i": i} for i in range(25)], wait_for_tasks=True)
    assert sum(len(r.object_ids) for r in responses) == 25
    assert len(em.records("helper")) == 25


def test_record_over_size_limit_rejects_whole_batch(em, client):
    seed(client, "sized", [{"objectID": "keep", "v": 1}])
    big = {"objectID": "big-one", "blob": "x" * 10_050}
    with pytest.raises(RequestException) as err:
        client.multiple_batch(
            {
                "requests": [
                    {"action": "addObject", "indexName": "sized", "body": {"objectID": "ok1"}},
                    {"action": "deleteObject", "indexName": "sized", "body": {"objectID": "keep"}},
                    {"action": "addObject", "indexName": "sized-new", "body": {"objectID": "ok2"}},
                    {"action": "updateObject", "indexName": "sized", "body": big},
                ]
            }
        )
    size = len(json.dumps(big, separators=(",", ":")))
    assert err.value.status_code == 400
    assert f"Record at the position 3 objectID=big-one is too big size={size}/10000 bytes." in err.value.message
    assert "index-and-records-size-and-usage-limitations/#record-size-limits" in err.value.message
    # Nothing applied: the delete is undone, the new index never appears.
    assert em.records("sized") == {"keep": {"objectID": "keep", "v": 1}}
    assert [i.name for i in client.list_indices().items] == ["sized"]
    assert em.stats()["rejected"]["400"] == 1

    # A partial update that makes the stored record too big is rejected too.
    with pytest.raises(RequestException) as err:
        partial(client, "sized", {"objectID": "keep", "blob": "y" * 10_000})
    assert "objectID=keep is too big" in err.value.message
    assert em.records("sized") == {"keep": {"objectID": "keep", "v": 1}}

    # The raw error carries Algolia's extra fields.
    r = requests.post(
        f"{em.url}/1/indexes/sized/batch", headers=auth(em), json={"requests": [{"action": "addObject", "body": big}]}
    )
    assert r.status_code == 400
    assert r.json()["objectID"] == "big-one" and r.json()["position"] == 0 and r.json()["status"] == 400


def test_object_id_must_be_a_string(em, client):
    with pytest.raises(RequestException) as err:
        client.multiple_batch(
            {
                "requests": [
                    {"action": "addObject", "indexName": "ids", "body": {"objectID": "fine"}},
                    {"action": "addObject", "indexName": "ids", "body": {"objectID": 42}},
                ]
            }
        )
    assert err.value.status_code == 400
    assert "position 1" in err.value.message and "objectID must be a string" in err.value.message
    assert em.records("ids") == {}

    for action in ("updateObject", "partialUpdateObject", "deleteObject"):
        with pytest.raises(RequestException) as err:
            partial(client, "ids", {"name": "no id"}, action=action)
        assert err.value.status_code == 400
        assert f"The 'objectID' attribute is required to use action={action}" in err.value.message
    assert em.records("ids") == {}


def test_increment_set_ignores_whole_update_unless_newer(em, client):
    partial(client, "ver", {"objectID": "p", "title": "v2", "_version": inc_set(2)})
    assert em.records("ver")["p"] == {"objectID": "p", "title": "v2", "_version": 2}

    partial(client, "ver", {"objectID": "p", "title": "v1", "extra": 1, "_version": inc_set(1)})  # older
    partial(client, "ver", {"objectID": "p", "title": "dup", "_version": inc_set(2)})  # same version
    assert em.records("ver")["p"] == {"objectID": "p", "title": "v2", "_version": 2}

    partial(client, "ver", {"objectID": "p", "title": "v3", "_version": inc_set(3)})  # newer
    assert em.records("ver")["p"] == {"objectID": "p", "title": "v3", "_version": 3}

    # A missing record is created only by a value > 0, and never by the NoCreate action.
    partial(client, "ver", {"objectID": "zero", "title": "z", "_version": inc_set(0)})
    partial(client, "ver", {"objectID": "nc", "_version": inc_set(5)}, action="partialUpdateObjectNoCreate")
    assert set(em.records("ver")) == {"p"}
    assert em.stats()["ignored_writes"] == 4


def test_increment_from_is_optimistic_locking(em, client):
    partial(client, "lock", {"objectID": "o", "v": inc_from(1), "name": "never"})  # missing, not 0
    assert em.records("lock") == {}
    partial(client, "lock", {"objectID": "o", "v": inc_from(0), "name": "first"})
    assert em.records("lock")["o"] == {"objectID": "o", "v": 1, "name": "first"}
    partial(client, "lock", {"objectID": "o", "v": inc_from(1), "name": "second"})
    assert em.records("lock")["o"] == {"objectID": "o", "v": 2, "name": "second"}
    partial(client, "lock", {"objectID": "o", "v": inc_from(1), "name": "stale"})  # lost the race
    assert em.records("lock")["o"] == {"objectID": "o", "v": 2, "name": "second"}


def test_builtin_operations(em, client):
    seed(client, "ops", [{"objectID": "o", "n": 10, "m": 1, "tags": ["a"], "keep": True}])
    partial(
        client,
        "ops",
        {
            "objectID": "o",
            "n": {"_operation": "Increment", "value": 5},
            "m": {"_operation": "Decrement", "value": 3},
            "fresh": {"_operation": "Increment", "value": 2},
            "tags": {"_operation": "Add", "value": "b"},
            "u": {"_operation": "AddUnique", "value": "x"},
        },
    )
    assert em.records("ops")["o"] == {
        "objectID": "o",
        "n": 15,
        "m": -2,
        "fresh": 2,
        "tags": ["a", "b"],
        "keep": True,
        "u": ["x"],
    }
    partial(
        client,
        "ops",
        {"objectID": "o", "u": {"_operation": "AddUnique", "value": "x"}, "tags": {"_operation": "Add", "value": "a"}},
    )
    partial(
        client,
        "ops",
        {
            "objectID": "o",
            "tags": {"_operation": "Remove", "value": "a"},
            "n": {"_operation": "Increment", "value": 0.5},
        },
    )
    rec = em.records("ops")["o"]
    assert rec["u"] == ["x"] and rec["tags"] == ["b"] and rec["n"] == 15.5

    with pytest.raises(RequestException) as err:
        partial(client, "ops", {"objectID": "o", "n": {"_operation": "Multiply", "value": 2}})
    assert err.value.status_code == 400 and "Multiply" in err.value.message


def test_concurrent_versioned_writers_keep_the_newest(em):
    """Four clients on their own connections race IncrementSet writes on the same 200 records."""
    from concurrent.futures import ThreadPoolExecutor

    def writer(worker: int) -> int:
        c = make_client(em.url, em.app_id, em.api_key)
        for version in range(worker + 1, 41, 4):  # the workers interleave versions 1..40
            c.batch(
                "race",
                {
                    "requests": [
                        {
                            "action": "partialUpdateObject",
                            "body": {"objectID": f"r{i}", "by": worker, "version": inc_set(version)},
                        }
                        for i in range(200)
                    ]
                },
            )
        c.close()
        return worker

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(writer, range(4))) == [0, 1, 2, 3]
    records = em.records("race")
    assert len(records) == 200
    assert all(r["version"] == 40 and r["by"] == 3 for r in records.values())
    assert em.stats()["record_writes"] == {"race": 40 * 200}


# ---------------------------------------------------------------------------------------------
# Reads
# ---------------------------------------------------------------------------------------------


def test_get_object_and_get_objects(em, client):
    seed(client, "get", [{"objectID": "a", "x": 1, "y": 2}, {"objectID": "b", "x": 3}])
    assert client.get_object("get", "a") == {"objectID": "a", "x": 1, "y": 2}
    assert client.get_object("get", "a", attributes_to_retrieve=["y"]) == {"objectID": "a", "y": 2}
    with pytest.raises(RequestException) as err:
        client.get_object("get", "missing")
    assert err.value.status_code == 404 and err.value.message == "ObjectID does not exist"

    resp = client.get_objects(
        {
            "requests": [
                {"indexName": "get", "objectID": "b"},
                {"indexName": "get", "objectID": "nope"},
                {"indexName": "other", "objectID": "a"},
                {"indexName": "get", "objectID": "a", "attributesToRetrieve": ["x"]},
            ]
        }
    )
    assert resp.results == [{"objectID": "b", "x": 3}, None, None, {"objectID": "a", "x": 1}]


def test_browse_objects_walks_every_page(em, client):
    records = [{"objectID": f"r{i:04d}", "i": i} for i in range(2500)]
    client.multiple_batch({"requests": [{"action": "addObject", "indexName": "big", "body": r} for r in records]})
    pages = []
    client.browse_objects("big", aggregator=lambda resp: pages.append(resp))
    assert [len(p.hits) for p in pages] == [1000, 1000, 500]
    assert pages[0].nb_hits == 2500 and pages[0].nb_pages == 3 and pages[0].cursor
    assert pages[-1].cursor is None
    seen = [h.object_id for p in pages for h in p.hits]
    assert sorted(seen) == [r["objectID"] for r in records]
    assert pages[1].hits[0].to_dict()["i"] == 1000

    small = []
    client.browse_objects(
        "big", aggregator=lambda resp: small.append(len(resp.hits)), browse_params={"hitsPerPage": 700, "query": "r24"}
    )
    assert small == [100]  # r2400..r2499

    with pytest.raises(RequestException) as err:
        client.browse("no-such-index")
    assert err.value.status_code == 404


def test_search_single_index(em, client):
    seed(
        client,
        "s",
        [
            {"objectID": "1", "title": "Red Shoes", "tags": ["summer"]},
            {"objectID": "2", "title": "Blue shoes"},
            {"objectID": "3", "title": "Green hat", "tags": ["SHOES-like"]},
            {"objectID": "4", "title": "Scarf", "price": 12},
        ],
    )
    resp = client.search_single_index("s", {"query": "SHOES"})
    assert sorted(h.object_id for h in resp.hits) == ["1", "2", "3"]
    assert resp.nb_hits == 3 and resp.page == 0 and resp.query == "SHOES"

    page1 = client.search_single_index("s", {"query": "", "hitsPerPage": 3, "page": 1})
    assert page1.nb_hits == 4 and page1.nb_pages == 2 and [h.object_id for h in page1.hits] == ["4"]
    assert client.search_single_index("s", {"query": "nothing-matches"}).hits == []
    as_string = client.search_single_index("s", {"params": "query=hat&hitsPerPage=5"})
    assert [h.object_id for h in as_string.hits] == ["3"] and as_string.hits_per_page == 5

    multi = client.search({"requests": [{"indexName": "s", "query": "scarf"}]})
    assert [h.object_id for h in multi.results[0].actual_instance.hits] == ["4"]


# ---------------------------------------------------------------------------------------------
# Index management
# ---------------------------------------------------------------------------------------------


def test_settings_roundtrip(em, client):
    assert client.index_exists("cfg") is False
    resp = client.set_settings("cfg", {"searchableAttributes": ["title"], "customRanking": ["desc(rank)"]})
    assert resp.task_id and resp.updated_at
    client.set_settings("cfg", {"hitsPerPage": 50})  # merges, like Algolia
    got = client.get_settings("cfg")
    assert got.searchable_attributes == ["title"] and got.custom_ranking == ["desc(rank)"]
    assert got.hits_per_page == 50
    assert client.index_exists("cfg") is True
    assert em.records("cfg") == {}


def test_operation_index_copy_and_move(em, client):
    seed(client, "src", [{"objectID": "1", "t": "a"}, {"objectID": "2", "t": "b"}])
    client.set_settings("src", {"customRanking": ["asc(t)"]})
    seed(client, "dst", [{"objectID": "old"}])

    client.operation_index("src", {"operation": "copy", "destination": "scoped", "scope": ["settings"]})
    assert em.records("scoped") == {}
    assert client.get_settings("scoped").custom_ranking == ["asc(t)"]

    client.operation_index("src", {"operation": "copy", "destination": "dst"})
    assert em.records("dst") == em.records("src") and len(em.records("dst")) == 2
    assert client.get_settings("dst").custom_ranking == ["asc(t)"]
    partial(client, "dst", {"objectID": "1", "t": "changed"})  # copies are independent
    assert em.records("src")["1"]["t"] == "a"

    client.operation_index("src", {"operation": "move", "destination": "moved"})
    names = [i.name for i in client.list_indices().items]
    assert "src" not in names and "moved" in names
    assert set(em.records("moved")) == {"1", "2"}
    assert client.get_settings("moved").custom_ranking == ["asc(t)"]

    client.operation_index("ghost", {"operation": "move", "destination": "moved"})  # ignored
    assert set(em.records("moved")) == {"1", "2"}


def test_a_copy_carries_no_mode_reranking_or_replicas_and_a_move_replaces_the_settings(em, client):
    """As Algolia documents operationIndex: "You can't copy the enableReRanking, mode, and replicas
    settings", nor copy to an index that has replicas; a move overwrites the destination."""
    from algoliasearch.http.exceptions import RequestException

    every = {"mode": "neuralSearch", "enableReRanking": True, "replicas": ["src_by_t"], "customRanking": ["asc(t)"]}
    client.set_settings("src", every)
    assert client.get_settings("src").to_dict()["replicas"] == ["src_by_t"]
    assert "src_by_t" in [i.name for i in client.list_indices().items], "a replica exists once named"
    client.operation_index("src", {"operation": "copy", "destination": "tmp", "scope": ["settings"]})
    assert client.get_settings("tmp").to_dict() == {"customRanking": ["asc(t)"]}
    with pytest.raises(RequestException) as refused:
        client.operation_index("tmp", {"operation": "copy", "destination": "src"})
    assert refused.value.status_code == 400
    client.operation_index("tmp", {"operation": "move", "destination": "src"})
    assert client.get_settings("src").to_dict() == {"customRanking": ["asc(t)"]}


def test_set_settings_forwards_to_replicas_when_asked(em, client):
    client.set_settings("p", {"replicas": ["p_a", "virtual(p_b)"]})
    client.set_settings("p", {"hitsPerPage": 5})
    assert client.get_settings("p_a").to_dict() == {}
    client.set_settings("p", {"hitsPerPage": 7}, forward_to_replicas=True)
    assert client.get_settings("p_a").hits_per_page == 7 and client.get_settings("p_b").hits_per_page == 7
    assert "replicas" not in client.get_settings("p_a").to_dict()


def test_clear_delete_list_and_tasks(em, client):
    seed(client, "a", [{"objectID": "1"}, {"objectID": "2"}])
    seed(client, "b", [{"objectID": "1"}])
    listing = client.list_indices()
    assert [(i.name, i.entries) for i in listing.items] == [("a", 2), ("b", 1)]
    assert listing.nb_pages == 1 and listing.items[0].created_at

    cleared = client.clear_objects("a")
    assert client.wait_for_task("a", cleared.task_id).status == "published"
    assert em.records("a") == {}

    deleted = client.delete_index("b")
    assert deleted.deleted_at and client.get_task("b", deleted.task_id).status == "published"
    assert [(i.name, i.entries) for i in client.list_indices().items] == [("a", 0)]


# ---------------------------------------------------------------------------------------------
# Auth, errors, faults, control endpoints
# ---------------------------------------------------------------------------------------------


def test_wrong_key_is_403(em):
    bad = make_client(em.url, em.app_id, "not-the-key")
    with pytest.raises(RequestException) as err:
        bad.list_indices()
    assert err.value.status_code == 403
    assert err.value.message == "Invalid Application-ID or API key"
    r = requests.get(f"{em.url}/1/indexes")
    assert r.status_code == 403 and r.json() == {"message": "Invalid Application-ID or API key", "status": 403}
    assert em.stats()["rejected"]["403"] == 2


def test_unknown_path_is_404_in_algolia_shape(em):
    r = requests.get(f"{em.url}/1/nothing/here", headers=auth(em))
    assert r.status_code == 404 and r.json() == {"message": "Not Found", "status": 404}
    r = requests.post(f"{em.url}/1/indexes/x/batch", headers=auth(em), data=b"{not json")
    assert r.status_code == 400 and r.json()["message"].startswith("Invalid JSON")


def test_fault_429_with_retry_after(em, client):
    em.inject_fault(status=429, retry_after=1, count=2)
    with requests.Session() as s:
        for _ in range(2):
            r = s.get(f"{em.url}/1/indexes", headers=auth(em))
            assert r.status_code == 429 and r.headers["Retry-After"] == "1" and r.json()["status"] == 429
        assert s.get(f"{em.url}/1/indexes", headers=auth(em)).status_code == 200
    assert em.stats()["rejected"]["429"] == 2

    # The real client honours Retry-After and succeeds on its own retry.
    em.inject_fault(status=429, retry_after=1, count=1)
    started = time.monotonic()
    assert client.list_indices().items == []
    assert time.monotonic() - started >= 0.9


def test_fault_503_for_some_seconds(em, client):
    em.inject_fault(status=503, seconds=0.8)
    started = time.monotonic()
    r = requests.get(f"{em.url}/1/indexes", headers=auth(em))
    assert r.status_code == 503 and r.json()["status"] == 503
    with pytest.raises(AlgoliaUnreachableHostException):
        client.list_indices()
    time.sleep(max(0.0, 0.85 - (time.monotonic() - started)))
    assert requests.get(f"{em.url}/1/indexes", headers=auth(em)).status_code == 200
    assert em.stats()["rejected"]["5xx"] == 2


def test_fault_dropped_connection(em, client):
    em.inject_fault(drop=True, count=2)
    with requests.Session() as s, pytest.raises(requests.ConnectionError):
        s.post(f"{em.url}/1/indexes/d/batch", headers=auth(em), json={"requests": []})
    with pytest.raises(requests.ConnectionError):
        client.batch("d", {"requests": [{"action": "addObject", "body": {"objectID": "1"}}]})
    assert em.records("d") == {}
    client.batch("d", {"requests": [{"action": "addObject", "body": {"objectID": "1"}}]})
    assert set(em.records("d")) == {"1"}
    assert em.stats()["rejected"]["dropped"] == 2


def test_fault_latency_and_writes_only(em, client):
    em.inject_fault(latency_ms=300, count=1)
    started = time.monotonic()
    client.list_indices()
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    client.list_indices()
    assert time.monotonic() - started < 0.25

    em.inject_fault(status=503, count=1, writes_only=True)
    client.list_indices()  # a read: untouched, and the fault stays queued
    assert em.stats()["faults_pending"] == 1
    r = requests.post(f"{em.url}/1/indexes/w/batch", headers=auth(em), json={"requests": []})
    assert r.status_code == 503
    assert em.stats()["faults_pending"] == 0


def test_control_endpoints_over_http(em, client):
    base = f"{em.url}/_emulator"
    client.multiple_batch(
        {
            "requests": [
                {"action": "addObject", "indexName": "i1", "body": {"objectID": "1", "v": 1}},
                {"action": "addObject", "indexName": "i2", "body": {"objectID": "2"}},
                {"action": "deleteObject", "indexName": "i2", "body": {"objectID": "2"}},
            ]
        }
    )
    client.batch("i1", {"requests": [{"action": "partialUpdateObject", "body": {"objectID": "1", "w": 2}}]})
    client.get_object("i1", "1")
    requests.get(f"{em.url}/1/indexes")  # 403, still a /1/ request

    stats = requests.get(f"{base}/stats").json()
    assert stats["requests"] == 4 and stats["batch_requests"] == 2
    assert stats["record_writes"] == {"i1": 2, "i2": 2} and stats["record_writes_total"] == 4
    assert stats["rejected"] == {"429": 0, "5xx": 0, "dropped": 0, "400": 0, "403": 1, "404": 0}
    assert requests.get(f"{base}/indexes/i1").json() == {"1": {"objectID": "1", "v": 1, "w": 2}}
    assert requests.get(f"{base}/indexes/unknown").json() == {}

    r = requests.post(f"{base}/faults", json={"status": 429, "retry_after": 2, "count": 1})
    assert r.status_code == 200 and len(r.json()["faults"]) == 1
    r = requests.get(f"{em.url}/1/indexes", headers=auth(em))
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    requests.post(f"{base}/faults", json=[{"latency_ms": 5000}, {"status": 500}])
    assert len(requests.get(f"{base}/faults").json()["faults"]) == 2
    assert requests.delete(f"{base}/faults").status_code == 200
    assert requests.get(f"{em.url}/1/indexes", headers=auth(em)).status_code == 200
    assert requests.post(f"{base}/faults", json={"status": 200}).status_code == 400
    assert requests.post(f"{base}/faults", json={"bogus": 1}).status_code == 400
    assert requests.post(f"{base}/faults", json=[{"drop": True}, {"status": 7}]).status_code == 400
    assert requests.get(f"{base}/faults").json() == {"faults": []}  # all or nothing

    assert requests.post(f"{base}/reset").json() == {"ok": True}
    stats = requests.get(f"{base}/stats").json()
    assert stats["requests"] == 0 and stats["record_writes_total"] == 0 and stats["indices"] == {}
    assert em.records("i1") == {}


def test_keepalive_and_stop_closes_idle_connections():
    emu = Emulator().start()
    host, port = emu.url.removeprefix("http://").split(":")
    request = (
        f"GET /1/indexes HTTP/1.1\r\nHost: x\r\nx-algolia-application-id: {emu.app_id}\r\n"
        f"x-algolia-api-key: {emu.api_key}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=3) as conn:
        for _ in range(2):  # two requests on one connection: keep-alive works
            conn.sendall(request)
            head = conn.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
        started = time.monotonic()
        emu.stop()
        assert time.monotonic() - started < 2
        assert conn.recv(100) == b""  # the idle keep-alive connection was closed by stop()


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_module(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "workerpool.emulator", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_cli_serves_and_stops_cleanly_on_sigterm():
    port = _free_port()
    proc = _run_module("--port", str(port), "--app-id", "CLIAPP", "--api-key", "cli-key")
    try:
        line = json.loads(proc.stdout.readline())
        assert line["url"] == f"http://127.0.0.1:{port}" and line["level"] == "info"
        c = make_client(line["url"], "CLIAPP", "cli-key")
        c.save_object("cli", {"objectID": "1"})
        assert [i.name for i in c.list_indices().items] == ["cli"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_port_in_use_exits_2():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = _run_module("--port", str(port))
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "in use" in lines[0]
