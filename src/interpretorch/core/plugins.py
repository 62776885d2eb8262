"""The package's plugins: modules that register methods or install drawing when imported, loaded once, on first
need: the built-in families (by name, below), then any installed package's ``interpretorch.plugins`` entry points
(how another package adds its own methods).

Loading them on need, not when ``interpretorch`` is imported, keeps ``import interpretorch`` and
``interpretorch --help`` free of torch; the ground floor names no family: it reads their names from the
installed package's metadata.
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points

GROUP = "interpretorch.plugins"
# The built-in plugins, in the registry's order (names, not imports: the ground floor imports no family).
BUILTIN = ("interpretorch.attribution", "interpretorch.transformers", "interpretorch.report")

_state = {"loaded": False, "loading": False}


def plugin_modules() -> list[str]:
    """The module names of every declared plugin, built-in ones first, in declaration order."""
    names = list(BUILTIN)
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.value not in names:
            names.append(ep.value)
    return names


def load_plugins() -> None:
    """Import every plugin module once (a no-op after the first call and while one call is running)."""
    if _state["loaded"] or _state["loading"]:
        return
    _state["loading"] = True
    try:
        for name in plugin_modules():
            importlib.import_module(name)
        _state["loaded"] = True
    finally:
        _state["loading"] = False
