"""Index settings checked against Algolia's own schema before any request.

`algolia_settings.schema.json` (next to this module) is the JSON Schema of Algolia's `setSettings`
request body, `indexSettings`: every setting Algolia accepts, with its type. It is derived from
Algolia's OpenAPI description of the Search API (MIT, its notice inside the file) by
`scripts/algolia_settings_schema.py`, and shipped in the package so that the check works wherever
workerpool is installed. A typo such as `searchableAttribute` went out verbatim before (Algolia
answers an unknown setting with an error only at push time, or ignores it); now each unknown or
ill-typed setting is one line naming it, with the nearest valid name for an unknown one.
"""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

import orjson

SCHEMA_FILE = "algolia_settings.schema.json"


@cache
def schema() -> dict[str, Any]:
    """The shipped settings schema (parsed once)."""
    loaded: dict[str, Any] = json.loads((resources.files("workerpool.ops") / SCHEMA_FILE).read_text())
    return loaded


def setting_names() -> list[str]:
    """Every setting name Algolia accepts, sorted."""
    return sorted(schema()["properties"])


def _short(value: Any, limit: int = 60) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _expected(node: dict[str, Any]) -> str:
    """What a property's schema accepts, in a few words: `an array of strings`, `one of "a", "b"`."""
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[1]
        return _expected(schema()["$defs"][name])
    for key in ("oneOf", "anyOf"):
        if key in node:
            return " or ".join(dict.fromkeys(_expected(part) for part in node[key]))
    if "enum" in node:
        return "one of " + ", ".join(_short(v) for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        items = node.get("items")
        return f"an array of {_plural(_expected(items))}" if isinstance(items, dict) else "an array"
    return {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean"}.get(
        str(kind), "an object" if kind == "object" else "a value of the documented shape"
    )


def _plural(text: str) -> str:
    for one, many in (("a string", "strings"), ("an integer", "integers"), ("a number", "numbers")):
        text = text.replace(one, many)
    return text


def problems(index: str, settings: Any) -> list[str]:
    """One line per unknown or ill-typed setting of `index`; [] when Algolia's schema accepts them all."""
    from jsonschema import Draft202012Validator

    if not isinstance(settings, dict):
        return [f"{index}: settings must be a JSON object of {{setting: value}}, got {_short(settings)}"]
    known = schema()["properties"]
    found = []
    for name in sorted(set(settings) - set(known)):
        near = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}?" if near else "see Algolia's index settings reference"
        found.append(f"{index}: unknown setting {name!r}; {hint}")
    validator = Draft202012Validator(schema())
    for name in sorted(set(settings) & set(known)):
        if not validator.is_valid({name: settings[name]}):
            found.append(f"{index}: setting {name!r} is {_short(settings[name])}; expected {_expected(known[name])}")
    return found
