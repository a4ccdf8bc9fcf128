"""Checks the package's import rule by reading its source (ast), function-level imports included.

Layers, bottom to top (docs/layout.md); a module may import its own layer
and the layers below, never one above, and no two modules may import each other in a cycle:

    errors, _io, _compressai  <-  core  <-  codecs  <-  methods  <-  formats  <-  hub  <-  assemble  <-  coding
        <-  {training, evaluation}  <-  demo  <-  cli

training and evaluation are siblings: neither imports the other. The package's ``__init__``
(the public facade) may import every layer but cli.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

BASE = ("errors", "_io", "_compressai")  # one layer of three modules
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base",),
    ("core",),
    ("codecs",),
    ("methods",),
    ("formats",),
    ("hub",),
    ("assemble",),
    ("coding",),
    ("training", "evaluation"),
    ("demo",),
    ("cli",),
)
FACADE = "__init__"


def _rank(part: str) -> int:
    for rank, names in enumerate(LAYERS):
        if part in names:
            return rank
    raise KeyError(part)


def module_name(root: Path, path: Path) -> str:
    """``pkg/a/b.py`` -> ``pkg.a.b``; ``pkg/a/__init__.py`` -> ``pkg.a``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str, is_package: bool) -> Iterable[tuple[str, int]]:
    """(imported module, line) for every import in the file, at any depth, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # ``from . import codecs`` imports a module too
                yield f"{target}.{alias.name}", node.lineno


def check(root: Path) -> list[str]:
    """Every import against the rule in the package at ``root``, and every cycle; as messages."""
    package = root.name
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, f): f for f in files}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for module, path in modules.items():
        for target, line in imports_of(path, module, path.name == "__init__.py"):
            if target != package and not target.startswith(package + "."):
                continue
            while target not in modules and "." in target:  # ``pkg.mod.name`` -> ``pkg.mod``
                target = target.rpartition(".")[0]
            if target == module or target not in modules:
                continue
            graph[module].add(target)
            problem = _against_rule(package, module, target)
            if problem:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {problem}")
    problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _top(package: str, module: str) -> str:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else FACADE
    return "base" if top in BASE else top


def _against_rule(package: str, module: str, target: str) -> str | None:
    source, imported = _top(package, module), _top(package, target)
    if imported == FACADE:
        return f"{module} imports the package facade {package}; import the module that defines the name"
    if source == FACADE:
        return f"the facade imports {target} from the cli layer" if imported == "cli" else None
    if source == imported:
        return None
    low, high = _rank(imported), _rank(source)
    if low > high:
        return f"{module} (layer {source}) imports {target} (layer {imported}, above it)"
    if low == high:
        return f"{module} (layer {source}) imports its sibling layer {imported} ({target})"
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles
