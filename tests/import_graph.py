"""Read a package's import graph from its source with ``ast`` (nothing is imported): which module imports which,
including imports inside functions, and which names starting with ``_`` cross from one module to another.

Edges: every ``import`` / ``from ... import`` statement anywhere in a module (top level, inside functions, under
``TYPE_CHECKING``), relative imports resolved, is an edge to the deepest module of the package it names:
``from pkg.a import f`` -> ``pkg.a``; ``from pkg import a`` -> ``pkg.a`` when ``a`` is a module, else ``pkg``
(its ``__init__``). A package ``__init__`` importing its children (re-exporting them) gives edges like any other
module, so a child importing from its own package's ``__init__`` closes a cycle and is reported. The parent
packages that Python runs before a submodule (importing ``pkg.a.b`` runs ``pkg/__init__`` first) are *not*
edges: counting them would make every package that re-exports its children a cycle with them.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImportGraph:
    """Modules of one package, the edges between them, and the private names imported across modules."""

    modules: dict[str, Path]
    edges: dict[str, set[str]] = field(default_factory=dict)
    private: list[tuple[str, str, str]] = field(default_factory=list)

    def cycles(self) -> list[list[str]]:
        """The strongly connected components of more than one module (each holds at least one cycle)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        counter = [0]

        def visit(v: str) -> None:
            # iterative Tarjan: (node, iterator over its successors)
            work = [(v, iter(sorted(self.edges.get(v, ()))))]
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on_stack.add(v)
            while work:
                node, succ = work[-1]
                for w in succ:
                    if w not in index:
                        index[w] = low[w] = counter[0]
                        counter[0] += 1
                        stack.append(w)
                        on_stack.add(w)
                        work.append((w, iter(sorted(self.edges.get(w, ())))))
                        break
                    if w in on_stack:
                        low[node] = min(low[node], index[w])
                else:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node])
                    if low[node] == index[node]:
                        comp = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            comp.append(w)
                            if w == node:
                                break
                        if len(comp) > 1:
                            found.append(sorted(comp))

        for v in sorted(self.modules):
            if v not in index:
                visit(v)
        return found


def _module_names(src: Path, package: str) -> dict[str, Path]:
    names = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def read_graph(src: str | Path, package: str) -> ImportGraph:
    """The import graph of ``package`` under the source folder ``src`` (which holds ``src/package/``)."""
    src = Path(src)
    modules = _module_names(src, package)
    graph = ImportGraph(modules, {m: set() for m in modules})
    for mod, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                for a in node.names:
                    full = f"{origin}.{a.name}"
                    targets.append((full, None) if full in modules else (origin, a.name))
            for name, imported in targets:
                if name != package and not name.startswith(package + "."):
                    continue
                target = _owner(name, modules)
                if target is None or target == mod:
                    continue
                graph.edges[mod].add(target)
                if imported is not None and imported.startswith("_"):
                    graph.private.append((mod, target, imported))
    return graph
