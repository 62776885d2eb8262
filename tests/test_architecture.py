"""The package's structure (docs/ARCHITECTURE.md): every module imports, the import graph has no cycle, no module
imports another module's private name, and each module imports only from its own floor or below."""
from __future__ import annotations

import ast
import importlib
import re
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


# --- A thin CLI (issue 25): argparse stays in cli/, and the CLI never changes what the library returned. ---

ENTRY_POINTS = {"main"}  # a module's own ``python -m`` command line: ``main(argv)`` under ``if __name__ == ...``
SHARED_COMMAND = {("training", "train_command")}  # the one train-and-save command line the training scripts share


def _modules(root: Path, package: str) -> dict[str, ast.Module]:
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _runs_as_script(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.If) and "__main__" in ast.dump(n.test) for n in tree.body)


def _inside(tree: ast.Module) -> dict[ast.AST, str]:
    """Each node of the module -> the name of the top-level function holding it ('' at module level)."""
    owner: dict[ast.AST, str] = {}
    for top in tree.body:
        name = top.name if isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef)) else ""
        for node in ast.walk(top):
            owner[node] = name
    return owner


def argparse_outside_cli(root: Path, package: str) -> list[tuple[str, int, str]]:
    """(module, line, what) for each use of argparse outside ``package.cli`` that is not a module's own command
    line (``main`` of a module run as a script, or the shared ``training.train_command``), and each mention of a
    ``Namespace`` there (a library function never receives parsed flags)."""
    bad = []
    for mod, tree in _modules(root, package).items():
        rel = mod[len(package) + 1:] if mod != package else ""
        if rel == "cli" or rel.startswith("cli."):
            continue
        owner = _inside(tree)
        script = _runs_as_script(tree)
        names = {"argparse"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "argparse":
                names.update(a.asname or a.name for a in node.names)
                bad += [(mod, node.lineno, f"imports {a.name}") for a in node.names if a.name == "Namespace"]
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in names:
                used = parents.get(node)
                used = used if isinstance(used, ast.Attribute) else node
                where = owner.get(node, "")
                allowed = (script and where in ENTRY_POINTS) or (rel, where) in SHARED_COMMAND
                if not allowed or "Namespace" in ast.unparse(used):
                    bad.append((mod, node.lineno, f"{ast.unparse(used)} in {where or 'the module'}"))
            elif isinstance(node, ast.arg) and node.annotation is not None and \
                    re.search(r"(?<![\w])Namespace\b", ast.unparse(node.annotation)):
                bad.append((mod, node.lineno, f"parameter {node.arg}: {ast.unparse(node.annotation)}"))
    return sorted(set(bad))


def _library_names(tree: ast.Module, package: str) -> set[str]:
    """Names a module imports from the library (the package outside its cli)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and \
                (node.module == package or node.module.startswith(package + ".")) and \
                not node.module.startswith(f"{package}.cli"):
            names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names
                         if a.name.startswith(package + ".") and not a.name.startswith(f"{package}.cli"))
    return names


# CLI helpers whose result is a library object (the LoadedModel of --model): checked like a library call's.
CLI_CALLS_GIVING_LIBRARY_OBJECTS = {"load_model_from_args"}


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _bound(target: ast.AST) -> set[str]:
    """The plain names an assignment target binds (``a``, ``a, (b, c)``; not ``x.a`` or ``x[a]``)."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return {n for e in target.elts for n in _bound(e)}
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    return set()


def cli_changes_library_results(root: Path, package: str) -> list[tuple[str, int, str]]:
    """(module, line, statement) for each statement in ``package.cli`` that assigns (or deletes) an attribute or
    item of an object a library call returned (``result = run(...); result.failed = ...``), or ``setattr``s it."""
    bad = []
    for mod, tree in _modules(root, package).items():
        if not (mod == f"{package}.cli" or mod.startswith(f"{package}.cli.")):
            continue
        library = _library_names(tree, package) | CLI_CALLS_GIVING_LIBRARY_OBJECTS
        scopes = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
        for scope in scopes:
            nodes = list(ast.walk(scope)) if scope is not tree else \
                [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(top)]
            results: set[str] = set()
            def from_library(value: ast.AST | None) -> bool:
                return isinstance(value, ast.Call) and _root(value.func) in library

            for node in nodes:  # names bound to what a library call returned
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                        if from_library(node.value):
                            results.update(_bound(target))
                        elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                            for t, v in zip(target.elts, node.value.elts):  # a, b = run(), 3
                                if from_library(v):
                                    results.update(_bound(t))
                elif isinstance(node, (ast.With, ast.AsyncWith)):
                    for item in node.items:
                        if isinstance(item.context_expr, ast.Call) and _root(item.context_expr.func) in library \
                                and isinstance(item.optional_vars, ast.Name):
                            results.add(item.optional_vars.id)
            for node in nodes:
                targets = []
                if isinstance(node, ast.Assign):
                    targets = [t for target in node.targets for t in ast.walk(target)]
                elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                    targets = [node.target]
                elif isinstance(node, ast.Delete):
                    targets = node.targets
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                        node.func.id in ("setattr", "delattr") and node.args and _root(node.args[0]) in results:
                    bad.append((mod, node.lineno, ast.unparse(node)))
                for t in targets:
                    if isinstance(t, (ast.Attribute, ast.Subscript)) and _root(t) in results:
                        bad.append((mod, node.lineno, ast.unparse(node).split("\n")[0]))
    return sorted(set(bad))


def test_argparse_stays_in_the_cli():
    assert argparse_outside_cli(SRC, PACKAGE) == []


def test_the_cli_never_changes_what_the_library_returned():
    assert cli_changes_library_results(SRC, PACKAGE) == []


def test_the_checks_catch_argparse_below_the_cli(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/cli/__init__.py": "import argparse\n\ndef run(args: argparse.Namespace):\n    return args.x\n",
        "toy/lib.py": "import argparse\n\ndef work(args: argparse.Namespace) -> int:\n    return args.n\n",
        "toy/reads.py": "from argparse import Namespace\n\ndef work(options):\n    return options.n\n",
        "toy/parses.py": "import argparse\n\ndef options(argv):\n"
                         "    return argparse.ArgumentParser().parse_args(argv)\n",
        "toy/script.py": "import argparse\n\ndef main(argv=None):\n    argparse.ArgumentParser().parse_args(argv)\n\n"
                         "if __name__ == '__main__':\n    main()\n",
        "toy/training.py": "import argparse\n\ndef train_command(argv=None):\n"
                           "    return argparse.ArgumentParser().parse_args(argv)\n",
    })
    bad = argparse_outside_cli(tmp_path, "toy")
    assert {(m, what) for m, _, what in bad} == {
        ("toy.lib", "parameter args: argparse.Namespace"), ("toy.lib", "argparse.Namespace in work"),
        ("toy.reads", "imports Namespace"), ("toy.parses", "argparse.ArgumentParser in options")}


def test_the_checks_catch_the_cli_changing_a_result(tmp_path):
    _write(tmp_path, {
        "toy/__init__.py": "",
        "toy/run.py": "class Result:\n    failed = ()\n\ndef run():\n    return Result()\n",
        "toy/cli/__init__.py": "",
        "toy/cli/common.py": "def parse(text):\n    return text\n",
        "toy/cli/bad.py": textwrap.dedent("""\
            import toy.run
            from toy.run import run
            from toy.cli.common import parse

            def command(args):
                result = run()
                result.failed = ["x"]
                result.items["a"] = 1
                setattr(result, "device", "cpu")
                other, n = toy.run.run(), 3
                other.total += n
                text = parse("a")
                text.upper = None  # a CLI object: not the library's
                args.device = "cpu"  # argparse's Namespace belongs to the CLI
            """),
        "toy/cli/good.py": "from toy.run import run\n\ndef command(args):\n    result = run()\n"
                           "    return result.failed\n",
    })
    bad = cli_changes_library_results(tmp_path, "toy")
    assert [(m, line) for m, line, _ in bad] == [("toy.cli.bad", 7), ("toy.cli.bad", 8), ("toy.cli.bad", 9),
                                                 ("toy.cli.bad", 11)]
