"""`import interpretorch` and `interpretorch --help` import no torch; the registry and the drawing load their
plugins on first need, in the registry's order (issue 33: startup)."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

from interpretorch.core import plugins


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_and_help_do_not_import_torch():
    code = ("import sys, contextlib, io\n"
            "import interpretorch\n"
            "from interpretorch.cli import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try:\n"
            "        main(['--help'])\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, e.code\n"
            "assert 'explain' in buf.getvalue()\n"
            "print(sorted(m for m in ('torch', 'numpy', 'matplotlib', 'transformers') if m in sys.modules))")
    assert _python(code) == "[]"


def test_registry_loads_every_family_in_order_without_the_top_level_api():
    code = ("from interpretorch.attribution import available_methods\n"
            "names = available_methods()\n"
            "print(names.index('gradcam') < names.index('attnlrp'), 'rollout' in names)")
    assert _python(code) == "True True"


def test_drawing_loads_on_first_picture():
    code = ("import torch\n"
            "from interpretorch.explanation import Explanation\n"
            "e = Explanation(maps=torch.rand(1, 4, 4), method='gradient', target=torch.tensor([0]))\n"
            "print(e.heatmap().shape)")
    assert "(1, 4, 4" in _python(code)


def test_public_names_and_run_function_survive_the_submodule_import():
    import interpretorch as it
    import interpretorch.run  # noqa: F401 - the submodule of the same name as the function

    assert callable(it.run) and it.run.__module__ == "interpretorch.run"
    assert it.RunResult.__name__ == "RunResult"
    assert set(it.__all__) <= set(dir(it))
    try:
        it.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_installed_packages_add_plugins_after_the_builtins(monkeypatch):
    fake = [SimpleNamespace(name="b", value="pkg_b.methods"), SimpleNamespace(name="a", value="pkg_a.methods"),
            SimpleNamespace(name="dup", value="interpretorch.transformers")]
    monkeypatch.setattr(plugins, "entry_points", lambda group: fake if group == plugins.GROUP else [])
    assert plugins.plugin_modules() == list(plugins.BUILTIN) + ["pkg_a.methods", "pkg_b.methods"]


def test_methods_listing_is_cached_by_source_fingerprint(tmp_path):
    from interpretorch.cli import methods

    assert methods.PLUGIN_GROUP == plugins.GROUP
    code = ("import sys\n"
            "from interpretorch.cli import main\n"
            "main(['methods'])\n"
            "print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr)")
    env = {**os.environ, "INTERPRETORCH_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
            for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert runs[0].stderr.strip() == "torch imported" and runs[1].stderr.strip() == "no torch"
    assert runs[0].stdout == runs[1].stdout and "gradcam" in runs[0].stdout and "attnlrp" in runs[0].stdout
    assert len(list(tmp_path.glob("methods-*.txt"))) == 1
    # a changed source file is a new key: the listing is recomputed, not read from the old one
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "m.py").write_text("x = 1\n")
    first = methods.source_fingerprint(src)
    assert methods.source_fingerprint(src) == first
    (src / "pkg" / "m.py").write_text("x = 12\n")
    assert methods.source_fingerprint(src) != first


def test_methods_listing_starts_with_the_registry(capsys):
    from interpretorch.attribution.registry import method_specs
    from interpretorch.cli import main, methods

    assert main(["methods"]) == 0
    assert capsys.readouterr().out.startswith(methods.listing(method_specs()))


def test_every_subpackage_can_be_the_first_import():
    # `from interpretorch.metrics import deletion` in a fresh interpreter closed an import cycle (attribution's
    # row descriptions loaded the plugins, which import the metrics back) and raised ImportError
    import pkgutil

    import interpretorch

    names = sorted(m.name for m in pkgutil.iter_modules(interpretorch.__path__) if m.name not in ("__main__",))
    code = ("import importlib, sys, traceback\n"
            f"bad = []\n"
            f"for name in {names!r}:\n"
            "    out = __import__('subprocess').run([sys.executable, '-c', 'import interpretorch.' + name],\n"
            "                                       capture_output=True, text=True)\n"
            "    if out.returncode: bad.append((name, out.stderr.strip().splitlines()[-1]))\n"
            "print(bad)")
    assert len(names) >= 10
    assert _python(code) == "[]"
