"""Every request workerpool sends, checked against Algolia's own OpenAPI description of the Search API.

The emulator records each `/1/` request it receives while the CLI (watch, settings push, verify and
its repair, reindex --atomic and its restart), the workers (`run --drain`) and the public Python API (a
loop of DatabaseService and AlgoliaService) do their work, and a maintained validator, openapi-core,
checks each one (path, method, query, headers, body) against
`../shared/data/algolia-openapi/search-subset.json`. Skipped, saying why, where that file is absent.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

import pytest

from testing import ROOT, drain, run_cli

SPEC = ROOT.parent / "shared" / "data" / "algolia-openapi" / "search-subset.json"

# Every operation the issue found workerpool sending, each of which the scenario must exercise.
OPERATIONS = {"multipleBatch", "getTask", "getSettings", "browse", "operationIndex", "setSettings", "deleteIndex"}


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC.is_file():
        pytest.skip(f"Algolia's OpenAPI description is not at {SPEC} (../shared/data/algolia-openapi/)")
    return json.loads(SPEC.read_text())


class _Recorded:
    """One recorded request in the shape openapi-core reads (its `Request` protocol)."""

    def __init__(self, entry: dict) -> None:
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = "https://TESTAPP.algolia.net"  # one of the spec's servers
        self.path = entry["path"]
        self.method = entry["method"].lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(entry["query"], keep_blank_values=True)),
            header=Headers(entry["headers"]),
            cookie=ImmutableMultiDict(),
        )
        self.content_type = entry["headers"].get("content-type", "application/json").lower()
        self.body = entry["body"].encode() or None


def _operation(spec: dict, method: str, path: str) -> str:
    """The operationId of a request; literal paths win over templated ones, as in the spec's router."""
    candidates = []
    for template, methods in spec["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in methods:
            candidates.append((template.count("{"), methods[method.lower()]["operationId"]))
    assert candidates, f"{method} {path} is not an operation of the spec"
    return min(candidates)[1]


def test_every_request_workerpool_sends_is_valid_against_algolias_openapi(
    spec, products, db_url, env, emulator, tmp_path
):
    from openapi_core import OpenAPI

    from workerpool import AlgoliaService, DatabaseService, Settings

    emulator.state.recorder.start()
    db = products
    db.execute(
        "INSERT INTO products (name, price, tags, attrs) "
        "SELECT 'p' || g, g, '{a,b}', '{\"k\": 1}' FROM generate_series(1, 30) g"
    )
    drain(env)  # the workers: multipleBatch
    db.execute("INSERT INTO products (name) SELECT 'q' || g FROM generate_series(1, 5) g")
    settings = Settings.from_env(env, env_file=None)
    with DatabaseService(db_url, settings) as service, AlgoliaService(service) as algolia:  # the Python API
        while items := service.get_pending_syncs(10):
            service.settle(algolia.sync_batch(items))
    (tmp_path / "settings.json").write_text(
        json.dumps({"products": {"customRanking": ["desc(stock)"], "replicas": ["products_by_name"]}})
    )
    for args in (
        ("settings", "push", "--file", str(tmp_path / "settings.json")),  # getSettings, setSettings, getTask
        ("settings", "push", "--file", str(tmp_path / "settings.json"), "--forward-to-replicas"),
        ("verify", "products"),  # browse
        ("reindex", "products", "--atomic"),  # operationIndex copy and move, setSettings, multipleBatch
    ):
        result = run_cli(env, *args)
        assert result.returncode == 0, (args, result.stderr)
    db.execute("DELETE FROM products WHERE id = 1")  # a deleteObject in the workers' next batch
    drain(env)
    emulator.inject_fault(status=403, count=1, writes_only=True)  # an interrupted atomic reindex ...
    assert run_cli(env, "reindex", "products", "--atomic").returncode == 4
    result = run_cli(env, "reindex", "products", "--atomic", "--restart")  # ... restarted: deleteIndex
    assert result.returncode == 0, result.stderr

    openapi = OpenAPI.from_dict(spec)
    sent = emulator.state.recorder.requests()
    seen, invalid = set(), []
    for entry in sent:
        seen.add(_operation(spec, entry["method"], entry["path"]))
        try:
            openapi.validate_request(_Recorded(entry))
        except Exception as exc:  # openapi-core's validation errors, with their causes
            causes = "; ".join(str(e) for e in getattr(exc, "schema_errors", []) or [getattr(exc, "__cause__", "")])
            invalid.append(f"{entry['method']} {entry['path']}?{entry['query']}: {exc} {causes} {entry['body'][:300]}")
    assert not invalid, "\n".join(invalid[:10])
    assert seen >= OPERATIONS, f"not exercised: {sorted(OPERATIONS - seen)}"
    assert len(sent) > 30
