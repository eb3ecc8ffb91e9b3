"""The package's import graph, read from the source (nothing is imported): which module imports
which, its cycles, and imports that run up the layers. ``python -m starcli.tools.imports`` prints
the graph by package, as docs/architecture.md shows it; a test keeps it free of cycles and of
upward imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # starcli/

# The layers, highest first: a module may import its own layer and those below it, never above.
# The development tools (bench, eval, this file) sit above the command line they document and drive.
LAYERS = ("tools", "cli", "serve", "app", "run", "model", "star", "cache", "ingest", "events", "errors")
_RANK = {name: len(LAYERS) - i for i, name in enumerate(LAYERS)}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (at any depth of its code, lazy imports included)."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module) if node.level else (node.module or "")
                # ``from . import x`` names a module when x is one
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for name in names:
                while name and name not in files:
                    name = name.rpartition(".")[0]
                if name and name != module and name.startswith("starcli"):
                    found.add(name)
        graph[module] = found
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (a package's ``__init__`` aside)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a lower layer imports a higher one."""
    found = []
    for module, targets in graph.items():
        for target in targets:
            a, b = layer(module), layer(target)
            if a in _RANK and b in _RANK and _RANK[b] > _RANK[a]:
                found.append((module, target))
    return sorted(found)


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in graph.items():
        out.setdefault(layer(module), set()).update(
            layer(t) for t in targets if layer(t) != layer(module) and layer(t) in _RANK)
    return out


def main() -> None:
    graph = import_graph()
    for name in LAYERS:
        uses = package_graph(graph).get(name, set())
        print(f"{name:<8} -> {', '.join(sorted(uses, key=LAYERS.index)) or '-'}")
    for group in cycles(graph):
        print("cycle:", " -> ".join(group))
    for module, target in upward_imports(graph):
        print(f"upward: {module} imports {target}")


if __name__ == "__main__":
    main()
