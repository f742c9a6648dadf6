"""The package's shape: no import cycle between workerpool's modules, and no module over 400 lines.

Every import of a workerpool module counts, wherever it is written: at module level, inside a
function, or under `if TYPE_CHECKING:` (a cycle there is still two modules that each need the other
to be understood). Relative imports are resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "workerpool"
SOURCE = Path(__file__).resolve().parents[2] / PACKAGE
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (`from .x import y` in workerpool.a.b -> workerpool.a.x)."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _known(name: str) -> str | None:
    """The workerpool module `name` is, or the nearest enclosing one (an attribute of a module)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every workerpool module that the code `source` of `module` imports, wherever it is written."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            # `from workerpool.runtime import queue` imports the module workerpool.runtime.queue;
            # `from workerpool.config import load` imports workerpool.config.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        for target in targets:
            if target.split(".")[0] != PACKAGE:
                continue
            hit = _known(target)
            if hit and hit != module:
                found.add(hit)
    return found


def imports_of(module: str) -> set[str]:
    """Every workerpool module that `module` imports, anywhere in its source."""
    path = MODULES[module]
    return imports_in(path.read_text(), module, path.name == "__init__.py")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other (each strongly connected
    component of more than one module, or a module importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(group)

    for start in sorted(graph):
        if start not in index:
            connect(start)
    return sorted(_find_cycle({m: graph[m] & group for m in group}) for group in groups)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path a -> b -> ... -> a, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def _without_parent_packages(module: str, imported: set[str]) -> set[str]:
    """Importing workerpool.a.b runs workerpool.a's __init__ first; that edge is Python's, not the code's."""
    return {m for m in imported if not module.startswith(m + ".")}


GRAPH = {m: _without_parent_packages(m, imports_of(m)) for m in MODULES}


def test_the_scan_sees_the_package():
    assert {"workerpool.config", "workerpool.process.worker", "workerpool.cli"} <= set(MODULES)
    assert "workerpool.config" in GRAPH["workerpool.cli"]


def test_relative_and_type_checking_imports_are_resolved():
    source = ast.parse("from ..db import connection\nfrom . import queue\nfrom .records import dumps\n")
    nodes = [n for n in source.body if isinstance(n, ast.ImportFrom)]
    resolved = [_resolve("workerpool.runtime.dispatch", False, n) for n in nodes]
    assert resolved == ["workerpool.db", "workerpool.runtime", "workerpool.runtime.records"]
    assert _resolve("workerpool.runtime", True, nodes[1]) == "workerpool.runtime"
    code = """
from typing import TYPE_CHECKING
from . import queue
if TYPE_CHECKING:
    from ..observability.metrics import Metrics
def later():
    import workerpool.ops.stats
    from workerpool.config import load
    import json
"""
    assert imports_in(code, "workerpool.runtime.dispatch") == {
        "workerpool.runtime.queue",
        "workerpool.observability.metrics",
        "workerpool.ops.stats",
        "workerpool.config",
    }


def test_the_cycle_finder_reports_every_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d", "a"}, "f": {"f"}, "g": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"], ["d", "e", "d"], ["f", "f"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_workerpool_modules():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


# A package (or a module) and the packages above it, which it must never import: the worker loop (process) is built
# on the public API (api), which is built on the worker's parts (runtime).
ABOVE = {
    "workerpool.runtime": ("workerpool.api", "workerpool.process", "workerpool.ops", "workerpool.cli"),
    "workerpool.api": ("workerpool.process", "workerpool.ops", "workerpool.cli"),
    "workerpool.process": ("workerpool.ops", "workerpool.cli"),
    # What a command's failure means is read by the commands (cli, ops) and knows only the error classes.
    "workerpool.failures": ("workerpool.api", "workerpool.process", "workerpool.ops", "workerpool.cli"),
    # The exit codes are plain numbers that any module may import: they import nothing of workerpool.
    "workerpool.exit_codes": ("workerpool.",),
    # The core model every part shares (a claim's rows, the actions, an outcome) depends on nothing.
    "workerpool.runtime.model": ("workerpool.",),
    # Commands run SQL through ops and process, never a query of their own.
    "workerpool.cli": ("workerpool.db.queries",),
}


def test_the_process_model_is_built_on_the_api_and_the_api_on_the_runtime():
    assert "workerpool.api.database" in GRAPH["workerpool.process.worker"]
    back = sorted(
        f"{module} -> {imported}"
        for package, above in ABOVE.items()
        for module, imports in GRAPH.items()
        if module == package or module.startswith(package + ".")
        for imported in imports
        if imported.startswith(above)
    )
    assert not back, "imports against the layering: " + "; ".join(back)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(SOURCE.parent)} has {lines} lines (limit {MAX_LINES})"
