"""Derive workerpool/ops/algolia_settings.schema.json from Algolia's OpenAPI description of its Search API.

The shipped file is the JSON Schema of the `setSettings` request body (`indexSettings`: every setting
Algolia accepts, with its type), with the components it references copied under `$defs`, and the
prose (descriptions, examples, `x-` annotations) left out. `settings push` validates index settings
against it before any request, where `../shared/data/` is not present. The source is MIT (Algolia,
Inc.); its notice travels in the file (`x-license`).

Usage (from the repository root): python scripts/algolia_settings_schema.py [SPEC] [OUT]
Defaults: ../shared/data/algolia-openapi/search-subset.json and the shipped file.
tests/unit/test_settings_schema.py checks that the shipped file is what this script derives.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT.parent / "shared" / "data" / "algolia-openapi" / "search-subset.json"
OUT = ROOT / "workerpool" / "ops" / "algolia_settings.schema.json"
SETTINGS_PATH = "/1/indexes/{indexName}/settings"
PROSE = ("description", "example", "examples", "title")


def _strip(node: Any, refs: set[str], in_properties: bool = False) -> Any:
    """`node` without prose; every `#/components/schemas/X` reference rewritten to `#/$defs/X` and noted."""
    if isinstance(node, list):
        return [_strip(item, refs) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if not in_properties and (key in PROSE or key.startswith("x-")):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
            name = value.rsplit("/", 1)[1]
            refs.add(name)
            out[key] = f"#/$defs/{name}"
            continue
        out[key] = _strip(value, refs, in_properties=(key == "properties" and not in_properties))
    return out


def derive(spec: dict[str, Any], source: str, license_text: str) -> dict[str, Any]:
    """The settings schema of `spec`, self-contained."""
    body = spec["paths"][SETTINGS_PATH]["put"]["requestBody"]["content"]["application/json"]["schema"]
    refs: set[str] = set()
    schema = _strip(body, refs)
    defs: dict[str, Any] = {}
    pending = set(refs)
    while pending:
        name = pending.pop()
        found: set[str] = set()
        defs[name] = _strip(spec["components"]["schemas"][name], found)
        pending |= found - set(defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "x-source": source,
        "x-license": license_text,
        **schema,
        "$defs": dict(sorted(defs.items())),
    }


def main(argv: list[str]) -> int:
    spec_path = Path(argv[1]) if len(argv) > 1 else SPEC
    out = Path(argv[2]) if len(argv) > 2 else OUT
    if not spec_path.is_file():
        print(f"{spec_path} does not exist; expected Algolia's search-subset.json", file=sys.stderr)
        return 2
    folder = spec_path.parent
    source = "Algolia Search API OpenAPI description, " + " ".join((folder / "SOURCE").read_text().split())
    schema = derive(json.loads(spec_path.read_text()), source, (folder / "LICENSE.md").read_text())
    out.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out} ({len(schema['properties'])} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
