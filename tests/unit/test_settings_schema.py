"""The settings schema shipped in the package is what scripts/algolia_settings_schema.py derives from
Algolia's OpenAPI description (../shared/data/algolia-openapi/, read where it exists), and the check
built on it names unknown and ill-typed settings in one line each."""

from __future__ import annotations

import importlib.util
import json

import pytest

from testing import ROOT
from workerpool.ops.settings_schema import problems, schema, setting_names

SPEC_DIR = ROOT.parent / "shared" / "data" / "algolia-openapi"


def _script():
    spec = importlib.util.spec_from_file_location("derive", ROOT / "scripts" / "algolia_settings_schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_schema_is_derived_from_algolias_spec():
    if not (SPEC_DIR / "search-subset.json").is_file():
        pytest.skip(f"Algolia's OpenAPI description is not at {SPEC_DIR} (../shared/data/algolia-openapi)")
    derive = _script()
    spec = json.loads((SPEC_DIR / "search-subset.json").read_text())
    source = "Algolia Search API OpenAPI description, " + " ".join((SPEC_DIR / "SOURCE").read_text().split())
    assert derive.derive(spec, source, (SPEC_DIR / "LICENSE.md").read_text()) == schema()
    put = spec["paths"]["/1/indexes/{indexName}/settings"]["put"]["requestBody"]["content"]["application/json"]
    assert setting_names() == sorted(put["schema"]["properties"])


def test_the_shipped_schema_carries_algolias_licence():
    assert "Copyright (c) 2015-present Algolia, Inc." in schema()["x-license"]
    assert schema()["additionalProperties"] is False


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"searchableAttributes": ["name"], "customRanking": ["desc(x)"], "hitsPerPage": 20}, []),
        ({"optionalWords": None, "typoTolerance": "min", "distinct": 1}, []),
        (
            {"searchableAttribute": ["name"]},
            ["p: unknown setting 'searchableAttribute'; did you mean 'searchableAttributes'?"],
        ),
        ({"qqq": 1}, ["p: unknown setting 'qqq'; see Algolia's index settings reference"]),
        ({"hitsPerPage": "ten"}, ["p: setting 'hitsPerPage' is \"ten\"; expected an integer"]),
        ({"replicas": "a"}, ["p: setting 'replicas' is \"a\"; expected an array of strings"]),
        ({"mode": "fast"}, ['p: setting \'mode\' is "fast"; expected one of "neuralSearch", "keywordSearch"']),
        ("nope", ['p: settings must be a JSON object of {setting: value}, got "nope"']),
    ],
)
def test_problems_name_each_bad_setting(settings, expected):
    assert problems("p", settings) == expected
