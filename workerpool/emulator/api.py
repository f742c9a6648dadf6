"""Algolia's Search REST routes under ``/1/`` and the JSON each one answers.

An endpoint is ``f(Call) -> JSON-able answer``; it raises ApiError for Algolia's error answers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote

from workerpool.emulator.common import MISSING, ApiError, Record, loads, now_iso
from workerpool.emulator.records import check_object_id, parse_attributes, project
from workerpool.emulator.state import EmulatorState

MAX_HITS_PER_PAGE = 1000


class Call(NamedTuple):
    """One routed request: the state, the path's captured parts, the query string, the raw body."""

    state: EmulatorState
    args: tuple[str, ...]
    query: dict[str, str]
    raw: bytes

    def body(self) -> Any:
        return loads(self.raw)


def _search_params(body: Any) -> dict[str, Any]:
    """Body of a search/browse: JSON keys, plus the ``params`` url-encoded string form."""
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid search parameters")
    params = dict(body)
    raw = params.pop("params", None)
    if isinstance(raw, str) and raw:
        for key, value in parse_qsl(raw, keep_blank_values=True):
            params.setdefault(key, value)
    return params


def _int_param(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = params.get(name, default)
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"Invalid value for {name}: {value!r}") from None
    return max(lo, min(hi, value))


def _ep_multiple_batch(c: Call) -> Any:
    body = c.body()
    tasks, oids = c.state.apply_batch(body.get("requests") if isinstance(body, dict) else None)
    return {"taskID": tasks, "objectIDs": oids}


def _ep_batch(c: Call) -> Any:
    name = c.args[0]
    body = c.body()
    tasks, oids = c.state.apply_batch(body.get("requests") if isinstance(body, dict) else None, name)
    return {"taskID": tasks.get(name) or c.state.new_task(), "objectIDs": oids}


def _single_write(c: Call, action: str, body: Any) -> tuple[int, str]:
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid record: a JSON object is expected")
    name = c.args[0]
    tasks, oids = c.state.apply_batch([{"action": action, "body": body}], name, is_batch_endpoint=False)
    return tasks[name], oids[0]


def _ep_save_object(c: Call) -> Any:
    task, oid = _single_write(c, "addObject", c.body())
    return {"createdAt": now_iso(), "taskID": task, "objectID": oid}


def _ep_put_object(c: Call) -> Any:
    body = c.body()
    if isinstance(body, dict):
        body["objectID"] = c.args[1]
    task, oid = _single_write(c, "updateObject", body)
    return {"updatedAt": now_iso(), "taskID": task, "objectID": oid}


def _ep_partial_object(c: Call) -> Any:
    body = c.body()
    if isinstance(body, dict):
        body["objectID"] = c.args[1]
    create = c.query.get("createIfNotExists", "true").lower() != "false"
    task, oid = _single_write(c, "partialUpdateObject" if create else "partialUpdateObjectNoCreate", body)
    return {"updatedAt": now_iso(), "taskID": task, "objectID": oid}


def _ep_delete_object(c: Call) -> Any:
    task, _ = _single_write(c, "deleteObject", {"objectID": c.args[1]})
    return {"deletedAt": now_iso(), "taskID": task}


def _ep_get_object(c: Call) -> Any:
    rec = c.state.get_object(c.args[0], c.args[1])
    if rec is None:
        raise ApiError(404, "ObjectID does not exist")
    return project(rec, parse_attributes(c.query.get("attributesToRetrieve")))


def _ep_get_objects(c: Call) -> Any:
    body = c.body()
    reqs = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(reqs, list):
        raise ApiError(400, "Invalid getObjects: 'requests' must be an array")
    wanted, attrs = [], []
    for pos, r in enumerate(reqs):
        if not isinstance(r, dict) or not isinstance(r.get("indexName"), str):
            raise ApiError(400, f"Missing indexName at the position {pos}")
        wanted.append((r["indexName"], check_object_id(r.get("objectID", MISSING), "getObjects", pos)))
        attrs.append(parse_attributes(r.get("attributesToRetrieve")))
    found = c.state.get_objects(wanted)
    return {"results": [None if rec is None else project(rec, a) for rec, a in zip(found, attrs, strict=True)]}


def _search_response(
    name: str, params: dict[str, Any], hits: list[Record], total: int, page: int, hpp: int, started: float
) -> dict[str, Any]:
    attrs = parse_attributes(params.get("attributesToRetrieve"))
    return {
        "hits": [project(h, attrs) for h in hits] if attrs else hits,
        "nbHits": total,
        "page": page,
        "nbPages": (total + hpp - 1) // hpp,
        "hitsPerPage": hpp,
        "exhaustiveNbHits": True,
        "processingTimeMS": int((time.perf_counter() - started) * 1000),
        "query": str(params.get("query") or ""),
        "params": "&".join(f"{k}={v}" for k, v in params.items() if not isinstance(v, (dict, list))),
        "index": name,
    }


def _run_search(state: EmulatorState, name: str, params: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    page = _int_param(params, "page", 0, 0, 1_000_000)
    hpp = _int_param(params, "hitsPerPage", 20, 1, MAX_HITS_PER_PAGE)
    hits, total = state.search(name, str(params.get("query") or ""), page, hpp)
    return _search_response(name, params, hits, total, page, hpp, started)


def _ep_query(c: Call) -> Any:
    return _run_search(c.state, c.args[0], _search_params(c.body()))


def _ep_queries(c: Call) -> Any:
    body = c.body()
    reqs = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(reqs, list):
        raise ApiError(400, "Invalid search: 'requests' must be an array")
    results = []
    for req in reqs:
        params = _search_params(req)
        name = params.pop("indexName", None)
        if not isinstance(name, str) or not name:
            raise ApiError(400, "Missing indexName in a search request")
        params.pop("type", None)
        results.append(_run_search(c.state, name, params))
    return {"results": results}


def _ep_browse(c: Call) -> Any:
    started = time.perf_counter()
    params = _search_params(c.body())
    hpp = _int_param(params, "hitsPerPage", MAX_HITS_PER_PAGE, 1, MAX_HITS_PER_PAGE)
    cursor = params.get("cursor")
    page = c.state.browse(
        c.args[0],
        str(cursor) if cursor else None,
        str(params.get("query") or ""),
        hpp,
        parse_attributes(params.get("attributesToRetrieve")),
    )
    if page["cursor"] is None:
        del page["cursor"]
    page.update(
        {
            "exhaustiveNbHits": True,
            "processingTimeMS": int((time.perf_counter() - started) * 1000),
            "query": str(params.get("query") or ""),
            "params": f"hitsPerPage={hpp}",
            "index": c.args[0],
        }
    )
    return page


def _ep_get_settings(c: Call) -> Any:
    return c.state.get_settings(c.args[0])


def _ep_set_settings(c: Call) -> Any:
    body = c.body()
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid settings: a JSON object is expected")
    c.state.set_settings(c.args[0], body)
    if c.query.get("forwardToReplicas") == "true":  # the same settings on each replica (not its replicas)
        forwarded = {k: v for k, v in body.items() if k != "replicas"}
        for replica in c.state.get_settings(c.args[0]).get("replicas") or ():
            c.state.set_settings(str(replica).removeprefix("virtual(").removesuffix(")"), forwarded)
    return {"taskID": c.state.new_task(), "updatedAt": now_iso()}


def _ep_operation(c: Call) -> Any:
    body = c.body()
    if not isinstance(body, dict):
        raise ApiError(400, "Invalid operation: a JSON object is expected")
    operation, destination, scope = body.get("operation"), body.get("destination"), body.get("scope")
    if operation not in ("copy", "move"):
        raise ApiError(400, f"Invalid operation {operation!r}: expected copy or move")
    if not isinstance(destination, str) or not destination:
        raise ApiError(400, "Missing destination")
    if destination == c.args[0]:
        raise ApiError(400, "Source and destination indices must be different")
    if scope is not None:
        if not isinstance(scope, list) or any(s not in ("settings", "synonyms", "rules") for s in scope):
            raise ApiError(400, f"Invalid scope {scope!r}: expected a list of settings, synonyms, rules")
        if operation == "move":
            raise ApiError(400, "scope is only supported with the copy operation")
    c.state.operation(c.args[0], operation, destination, scope or None)
    return {"taskID": c.state.new_task(), "updatedAt": now_iso()}


def _ep_clear(c: Call) -> Any:
    c.state.clear(c.args[0])
    return {"taskID": c.state.new_task(), "updatedAt": now_iso()}


def _ep_delete_index(c: Call) -> Any:
    c.state.delete_index(c.args[0])
    return {"taskID": c.state.new_task(), "deletedAt": now_iso()}


def _ep_list_indices(c: Call) -> Any:
    items = c.state.list_indices()
    if "hitsPerPage" not in c.query:
        return {"items": items, "nbPages": 1}
    hpp = _int_param(c.query, "hitsPerPage", 100, 1, 1000)
    page = _int_param(c.query, "page", 0, 0, 1_000_000)
    return {"items": items[page * hpp : (page + 1) * hpp], "nbPages": max(1, (len(items) + hpp - 1) // hpp)}


def _ep_task(c: Call) -> Any:
    try:
        task = int(c.args[-1])
    except ValueError:
        raise ApiError(400, "taskID must be an integer") from None
    # A slow copy/move (the fault queue's task delay) and a record write still publishing (the
    # publish delay) are both notPublished; either may hold a task, both are asked.
    held = not c.state.fault_queue.task_published(task)
    published = c.state.publishing.task_published(task) and not held
    return {"status": "published" if published else "notPublished", "pendingTask": not published}


class Route(NamedTuple):
    """A method and path pattern, its endpoint, and whether it writes (``writes_only`` faults hit it)."""

    method: str
    pattern: re.Pattern[str]
    handler: Callable[[Call], Any]
    write: bool


def _route(method: str, path: str, handler: Callable[[Call], Any], write: bool) -> Route:
    regex = re.escape(path).replace(r"\{\}", "([^/]+)")
    return Route(method, re.compile(regex + r"\Z"), handler, write)


# Order matters: "*" routes and fixed suffixes come before the {index}/{objectID} catch-alls.
_ROUTES: list[Route] = [
    _route("POST", "/1/indexes/*/batch", _ep_multiple_batch, True),
    _route("POST", "/1/indexes/*/objects", _ep_get_objects, False),
    _route("POST", "/1/indexes/*/queries", _ep_queries, False),
    _route("POST", "/1/indexes/{}/batch", _ep_batch, True),
    _route("POST", "/1/indexes/{}/browse", _ep_browse, False),
    _route("POST", "/1/indexes/{}/query", _ep_query, False),
    _route("POST", "/1/indexes/{}/clear", _ep_clear, True),
    _route("POST", "/1/indexes/{}/operation", _ep_operation, True),
    _route("GET", "/1/indexes/{}/settings", _ep_get_settings, False),
    _route("PUT", "/1/indexes/{}/settings", _ep_set_settings, True),
    _route("GET", "/1/indexes/{}/task/{}", _ep_task, False),
    _route("GET", "/1/task/{}", _ep_task, False),
    _route("GET", "/1/indexes", _ep_list_indices, False),
    _route("POST", "/1/indexes/{}", _ep_save_object, True),
    _route("DELETE", "/1/indexes/{}", _ep_delete_index, True),
    _route("POST", "/1/indexes/{}/{}/partial", _ep_partial_object, True),
    _route("GET", "/1/indexes/{}/{}", _ep_get_object, False),
    _route("PUT", "/1/indexes/{}/{}", _ep_put_object, True),
    _route("DELETE", "/1/indexes/{}/{}", _ep_delete_object, True),
]


def match_route(method: str, path: str) -> tuple[Route | None, tuple[str, ...]]:
    """The route of ``method path`` and the path's unquoted parts, or (None, ())."""
    for route in _ROUTES:
        if route.method == method:
            m = route.pattern.match(path)
            if m is not None:
                return route, tuple(unquote(g) for g in m.groups())
    return None, ()
