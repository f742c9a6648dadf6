"""mkdocs hook: a link from a page to a repository file outside docs/ (`../benchmarks/README.md`)
becomes that file's repository path as code. The site carries only docs/, so such a link would be
broken there; everything else stays under `mkdocs build --strict`'s link checks."""

from __future__ import annotations

import re
from typing import Any

_OUTSIDE = re.compile(r"\[([^\]]+)\]\((?:\.\./)+([^)#\s]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    def plain(match: re.Match[str]) -> str:
        label, path = match.group(1), match.group(2)
        return label if label.strip("`") == path else f"{label} (`{path}` in the repository)"

    return _OUTSIDE.sub(plain, markdown)
