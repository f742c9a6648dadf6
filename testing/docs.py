"""The Python blocks of the documentation, as tests read them: each complete block (titled with the
file name a user would save it as) or a fragment (titled "Fragment: …", saying what it needs)."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from testing.constants import ROOT

DOCS = ROOT / "docs"
_FENCE = re.compile(r'^```python(?:[ \t]+title="([^"]*)")?[ \t]*\n(.*?)^```[ \t]*$', re.M | re.S)


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    title: str | None
    code: str

    @property
    def fragment(self) -> bool:
        return bool(self.title and self.title.startswith("Fragment"))


def python_blocks(paths: list[Path] | None = None) -> list[Block]:
    """Every ```python block of the pages (docs/*.md and the README by default)."""
    found = []
    for path in paths or [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:
        text = path.read_text()
        for match in _FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(Block(str(path.relative_to(ROOT)), line, match.group(1), match.group(2)))
    return found


def program(title: str) -> Path:
    """The complete block titled `title`, written to a file of that name in a fresh directory."""
    (block,) = [b for b in python_blocks() if b.title == title]
    path = Path(tempfile.mkdtemp(prefix="workerpool-docs-")) / title
    path.write_text(block.code)
    return path
