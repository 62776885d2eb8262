"""interpretorch: explain what deep networks see, correctly and fast.

The public names are loaded on first use, so that ``import interpretorch`` (and the ``interpretorch --help``
that imports it) does not pay for torch and every method family up front.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "explain": "interpretorch.attribution", "bind": "interpretorch.attribution",
    "register": "interpretorch.attribution", "available_methods": "interpretorch.attribution",
    "default_methods": "interpretorch.attribution", "get_method": "interpretorch.attribution",
    "method_specs": "interpretorch.attribution", "capture": "interpretorch.capture",
    "Site": "interpretorch.capture", "token_grid": "interpretorch.capture",
    "Explanation": "interpretorch.explanation", "load_model": "interpretorch.models",
    "run": "interpretorch.run", "RunResult": "interpretorch.run",
}
__all__ = ["explain", "run", "RunResult", "bind", "register", "available_methods", "default_methods",
           "get_method", "method_specs", "capture", "Site", "token_grid", "Explanation", "load_model",
           "__version__"]


class _Export:
    """A public name of the package, imported from its module on first use."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.replaced: list[Any] = []  # a value set by the user (a test's monkeypatch)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        if self.replaced:
            return self.replaced[0]
        return getattr(importlib.import_module(_EXPORTS[self.name]), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        # Importing the submodule of the same name (interpretorch.run, interpretorch.capture) binds it on the
        # package; the package keeps exporting the function, as when it was imported eagerly.
        if not isinstance(value, types.ModuleType):
            self.replaced[:] = [value]

    def __delete__(self, obj: Any) -> None:
        self.replaced.clear()


class _Package(types.ModuleType):
    """The ``interpretorch`` module with lazily imported public names."""

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_EXPORTS))


for _name in _EXPORTS:
    setattr(_Package, _name, _Export(_name))
sys.modules[__name__].__class__ = _Package
