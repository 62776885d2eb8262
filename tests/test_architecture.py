"""The package's structure (docs/ARCHITECTURE.md): every module imports, the import graph has no cycle, no module
imports another module's private name, and each module imports only from its own floor or below."""
from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest

from import_graph import read_graph

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "interpretorch"

# The floors, lowest first (docs/ARCHITECTURE.md). A module is on the floor of the longest prefix naming it; a
# family's own ``report`` module (pictures and pages of its results) is on the report floor.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("core", "explanation", "capture", "imageops", "data", "training", "models", "runstate", "labels")),
    ("families", ("attribution", "metrics", "concepts", "dissect", "gan", "sanity", "transformers")),
    ("run and report", ("run", "report", "datasets")),
    ("api and cli", ("", "cli")),
]


def floor_of(module: str) -> int:
    """The index in FLOORS of ``module``'s floor."""
    rel = module[len(PACKAGE) + 1:] if module != PACKAGE else ""
    if rel.split(".")[-1] == "report" and rel != "report":
        return 2
    best, level = -1, None
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if (rel == p or rel.startswith(p + ".") or p == "") and len(p) > best:
                best, level = len(p), i
    assert level is not None, module
    return level


@pytest.fixture(scope="module")
def graph():
    return read_graph(SRC, PACKAGE)


def test_every_module_imports(graph):
    for name in graph.modules:
        if name.endswith("__main__"):
            continue
        importlib.import_module(name)


def test_the_import_graph_has_no_cycle(graph):
    assert graph.cycles() == []


def test_no_module_imports_a_private_name_of_another(graph):
    assert graph.private == []


def test_private_modules_are_imported_only_inside_their_package(graph):
    bad = []
    for mod, targets in graph.edges.items():
        for t in targets:
            parts = t.split(".")
            private = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
            if private and not mod.startswith(".".join(parts[:private[0]]) + "."):
                bad.append((mod, t))
    assert bad == []


def test_each_module_imports_only_its_floor_or_below(graph):
    # A package's __init__ is its front door: it may re-export any of its own modules (dissect re-exports its
    # report); what it imports from outside the package obeys the floors like any module.
    upward = [(m, t, FLOORS[floor_of(m)][0], FLOORS[floor_of(t)][0])
              for m, ts in graph.edges.items() for t in ts
              if floor_of(t) > floor_of(m) and not (graph.modules[m].name == "__init__.py" and t.startswith(m + "."))]
    assert upward == []


def test_the_ground_floor_imports_nothing_above_it(graph):
    ground = [m for m in graph.modules if floor_of(m) == 0]
    assert f"{PACKAGE}.core" in ground and f"{PACKAGE}.explanation" in ground
    assert all(floor_of(t) == 0 for m in ground for t in graph.edges[m])


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_the_checks_catch_a_cycle_held_by_an_import_inside_a_function(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "from toy.a import f\n",
        "toy/a.py": "from toy.b import g\n\ndef f():\n    return g()\n",
        "toy/b.py": "def g():\n    from toy.a import f  # the circle, held inside a function\n    return f\n",
        "toy/c.py": "from . import a\nfrom .b import g\n",
    })
    g = read_graph(tmp_path, "toy")
    assert g.edges["toy.c"] == {"toy.a", "toy.b"}  # relative imports resolved
    assert g.cycles() == [["toy.a", "toy.b"]]


def test_the_checks_catch_a_child_importing_from_its_package_init(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "from toy.a import f\n",
        "toy/a.py": "def f():\n    from toy import h\n    return h\n",
        "toy/sub/__init__.py": "",
        "toy/sub/x.py": "from toy.a import f\n",  # the parent package run first is not an edge
    })
    g = read_graph(tmp_path, "toy")
    assert g.cycles() == [["toy", "toy.a"]]
    assert g.edges["toy.sub.x"] == {"toy.a"}


def test_the_checks_catch_a_private_name_crossing_modules(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/a.py": "def _helper():\n    pass\n\ndef _own():\n    pass\n",
        "toy/b.py": "def use():\n    from toy.a import _helper\n    from .a import public_name\n",
    })
    g = read_graph(tmp_path, "toy")
    assert g.private == [("toy.b", "toy.a", "_helper")]
    assert g.cycles() == []


def test_floors_place_modules():
    assert FLOORS[floor_of("interpretorch.core.batching")][0] == "ground"
    assert FLOORS[floor_of("interpretorch.attribution.registry")][0] == "families"
    assert FLOORS[floor_of("interpretorch.dissect.report")][0] == "run and report"
    assert FLOORS[floor_of("interpretorch.cli.explain")][0] == "api and cli"
    assert FLOORS[floor_of("interpretorch")][0] == "api and cli"
