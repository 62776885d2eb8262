"""interpretorch: explain what deep networks see, correctly and fast.

The names below are imported on first use, so ``import interpretorch`` (and ``interpretorch --help``) does not
import torch. The built-in methods (attribution's, then the transformers family's: the registry's order) and the
report floor's drawing of explanations are plugins (:mod:`interpretorch.core.plugins`), loaded the first time the
registry or a picture is asked for.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_PUBLIC = {
    "explain": "interpretorch.attribution", "bind": "interpretorch.attribution",
    "explain_targets": "interpretorch.attribution", "ClassTarget": "interpretorch.core.targets",
    "DetectionTarget": "interpretorch.core.targets", "SegmentationTarget": "interpretorch.core.targets",
    "SimilarityTarget": "interpretorch.core.targets", "RegressionTarget": "interpretorch.core.targets",
    "FunctionTarget": "interpretorch.core.targets",
    "register": "interpretorch.attribution", "available_methods": "interpretorch.attribution",
    "default_methods": "interpretorch.attribution", "get_method": "interpretorch.attribution",
    "method_specs": "interpretorch.attribution", "run": "interpretorch.run", "RunResult": "interpretorch.run",
    "capture": "interpretorch.capture", "Site": "interpretorch.capture", "token_grid": "interpretorch.capture",
    "Explanation": "interpretorch.explanation", "grid": "interpretorch.report", "load_model": "interpretorch.models",
}
__all__ = ["explain", "explain_targets", "ClassTarget", "DetectionTarget", "SegmentationTarget", "SimilarityTarget",
           "RegressionTarget", "FunctionTarget", "run", "RunResult", "bind", "register", "available_methods", "default_methods",
           "get_method", "method_specs", "capture", "Site", "token_grid", "Explanation", "grid", "load_model",
           "__version__"]


def __getattr__(name: str) -> Any:
    """Import a public name, or a subpackage (``interpretorch.transformers``), on first use."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """This package's module type: its ``run`` stays the function ``run`` when the submodule of that name is
    imported (the import system sets the parent's attribute to the submodule, which stays in ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "run" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
