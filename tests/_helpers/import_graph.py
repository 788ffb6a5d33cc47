"""trtopt's static import graph: every ``import`` (module level and inside functions), and its circles.

Used by the structure tests and by ``python -m tests._helpers.import_graph`` to print the graph's
strongly connected components (Tarjan's algorithm): each component of more than one module is an
import circle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file of every module of the ``trtopt`` package under ``root``."""
    out = {}
    for path in sorted((root / "trtopt").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _targets(mods: dict[str, Path], current: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in mods]
    base = current.split(".") if mods[current].name == "__init__.py" else current.split(".")[:-1]
    if node.level:
        stem = base[: len(base) - (node.level - 1)]
        module = ".".join(stem + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    return [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module
            for a in node.names if f"{module}.{a.name}" in mods or module in mods]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the trtopt modules it imports (anywhere in the file)."""
    mods = modules(root)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        graph[name] = {t for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                       for t in _targets(mods, name, n) if t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    g = import_graph()
    cs = circles(g)
    for c in cs:
        print(len(c), " ".join(c))
    print(f"{len(g)} modules, {len(cs)} import circles")
