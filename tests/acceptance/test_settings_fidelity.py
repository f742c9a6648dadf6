"""Index settings as Algolia's own spec has them: checked before any request, forwarded to replicas
when asked, kept whole by an atomic reindex; and workerpool's user-agent segment on every request.

Real Postgres, the emulator over real HTTP, real `workerpool` processes: no mocks.
"""

from __future__ import annotations

import json

import pytest

from testing import drain, run_cli
from workerpool import __version__

SEGMENT = f"; workerpool ({__version__})"


def _errors(result) -> list[str]:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    return result.stderr.strip().splitlines()


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_typo_in_a_setting_name_exits_2_naming_it_and_the_nearest_valid_name(
    products, env, emulator, tmp_path, dry_run
):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"products": {"searchableAttribute": ["name"], "hitsPerPage": "ten"}}))
    result = run_cli(env, "settings", "push", "--file", str(path), *(["--dry-run"] if dry_run else []))
    assert result.returncode == 2
    assert _errors(result) == [
        "workerpool: error: products: unknown setting 'searchableAttribute'; did you mean 'searchableAttributes'?",
        "workerpool: error: products: setting 'hitsPerPage' is \"ten\"; expected an integer",
    ]
    assert emulator.stats()["requests"] == 0, "nothing is sent before the settings are valid"


def test_settings_kept_in_algolia_index_config_are_checked_too(products, env, emulator):
    products.execute(
        "UPDATE algolia_index_config SET settings = %s WHERE table_name = 'products'",
        (json.dumps({"customRankin": ["desc(stock)"], "typoTolerance": "sometimes"}),),
    )
    result = run_cli(env, "settings", "push", "--dry-run")
    assert result.returncode == 2
    assert _errors(result) == [
        "workerpool: error: products: unknown setting 'customRankin'; did you mean 'customRanking'?",
        "workerpool: error: products: setting 'typoTolerance' is \"sometimes\"; "
        'expected a boolean or one of "min", "strict", "true", "false"',
    ]


def test_settings_reach_the_replicas_with_forward_to_replicas(products, env, emulator, tmp_path):
    emulator.state.set_settings("products", {"replicas": ["products_by_price", "virtual(products_virtual)"]})
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"products": {"customRanking": ["desc(stock)"]}}))
    assert run_cli(env, "settings", "push", "--file", str(path)).returncode == 0
    assert "customRanking" not in emulator.state.get_settings("products_by_price")
    path.write_text(json.dumps({"products": {"customRanking": ["asc(price)"]}}))
    result = run_cli(env, "settings", "push", "--file", str(path), "--forward-to-replicas")
    assert result.returncode == 0, result.stderr
    for replica in ("products_by_price", "products_virtual"):
        assert emulator.state.get_settings(replica)["customRanking"] == ["asc(price)"]
    path.write_text(json.dumps({"products": {"customRanking": ["desc(price)"]}}))
    result = run_cli({**env, "ALGOLIA_FORWARD_TO_REPLICAS": "true"}, "settings", "push", "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert emulator.state.get_settings("products_by_price")["customRanking"] == ["desc(price)"]


def test_an_atomic_reindex_keeps_every_setting_the_copy_cannot_carry(products, env, emulator):
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 6) g")
    drain(env)
    every = {
        "mode": "neuralSearch",
        "enableReRanking": True,
        "replicas": ["products_by_price"],
        "customRanking": ["desc(stock)"],
        "searchableAttributes": ["name"],
    }
    emulator.state.set_settings("products", every)
    result = run_cli(env, "reindex", "products", "--atomic")
    assert result.returncode == 0, result.stderr
    live = emulator.state.get_settings("products")
    for name, value in every.items():
        assert live.get(name) == value, f"{name} lost by the atomic reindex: {live}"
    assert len(emulator.records("products")) == 6


def test_every_request_carries_workerpools_user_agent_segment(products, env, emulator, tmp_path):
    emulator.state.recorder.start()
    products.execute("INSERT INTO products (name) SELECT 'p' || g FROM generate_series(1, 6) g")
    drain(env)
    (tmp_path / "s.json").write_text(json.dumps({"products": {"customRanking": ["desc(stock)"]}}))
    assert run_cli(env, "settings", "push", "--file", str(tmp_path / "s.json")).returncode == 0
    assert run_cli(env, "verify", "products").returncode == 0
    assert run_cli(env, "reindex", "products", "--atomic").returncode == 0
    sent = emulator.state.recorder.requests()
    assert {r["path"].split("/")[-1] for r in sent} >= {"batch", "settings", "browse", "operation"}
    missing = [
        (r["method"], r["path"], r["headers"].get("user-agent"))
        for r in sent
        if SEGMENT not in r["headers"].get("user-agent", "")
    ]
    assert not missing, missing[:5]
