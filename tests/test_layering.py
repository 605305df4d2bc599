"""Imports flow one way: no cycle between ragtriage's packages, lazy imports inside functions included."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import ragtriage

ROOT = Path(ragtriage.__file__).parent


def _module(path: Path) -> str:
    parts = ["ragtriage", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The package (``ragtriage.alerts``) or top-level module (``ragtriage.runtime``) a module belongs to;
    ``ragtriage`` itself is the public surface, which imports from everything."""
    return ".".join(module.split(".")[:2])


def _imports(path: Path, module: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # every import, at any depth
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")[: -node.level if path.name != "__init__.py" else len(module.split("."))]
                found.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name == "ragtriage" or name.startswith("ragtriage.")}


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        module = _module(path)
        for target in _imports(path, module):
            if _unit(target) != _unit(module):
                graph[_unit(module)].add(_unit(target))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle's first sighting, by depth-first search from each node."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    found.append(cycle)
            elif len(path) < len(graph) + 1:
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_no_import_cycle_between_packages() -> None:
    graph = package_graph()
    assert "ragtriage.runtime" in graph and "ragtriage.alerts" in graph["ragtriage.runtime"]  # the walk sees imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_evaluator_knows_nothing_of_alerts_and_the_bottom_nothing_of_the_top() -> None:
    graph = package_graph()
    assert "ragtriage.alerts" not in graph["ragtriage.evaluator"]
    top = {"ragtriage.instrumentation", "ragtriage.runtime", "ragtriage.gate", "ragtriage.cli", "ragtriage"}
    for bottom in ("ragtriage.config", "ragtriage.sample", "ragtriage.judges", "ragtriage.evaluator"):
        assert not graph[bottom] & top, bottom


def private_imports() -> list[tuple[str, str]]:
    """``(importer, module)`` for every import of a package's private module (``ragtriage.pkg._x``, or ``from
    ragtriage.pkg import _x``) from outside that package. ``ragtriage._x`` is private to the whole library."""
    found = []
    for path in ROOT.rglob("*.py"):
        module = _module(path)
        targets = set(_imports(path, module))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ragtriage"):
                targets |= {f"{node.module}.{alias.name}" for alias in node.names if alias.name.startswith("_")}
        for target in sorted(targets):
            parts = target.split(".")
            for i, part in enumerate(parts[2:], start=2):
                owner = ".".join(parts[:i])
                if part.startswith("_") and not part.startswith("__") and not (module + ".").startswith(owner + "."):
                    found.append((module, target))
    return found


def test_no_package_imports_another_packages_private_module() -> None:
    assert private_imports() == []
