"""``--option METHOD.NAME=VALUE`` grouped by method (or metric) and checked against the registries and the
values' types: shared by ``explain`` and the ``--data`` runs (a module of its own, so neither command imports
the other)."""
from __future__ import annotations

import inspect
import math
import re
from typing import Any, Sequence

from interpretorch.cli.common import UserError, user_error_message

_LITERAL_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "None": (type(None),), "Optional": (),
    "Sequence": (list, tuple), "list": (list, tuple), "tuple": (list, tuple), "dict": (dict,)}
_NOT_FROM_THE_CLI = {"torch", "Tensor", "nn", "Module"}  # a value typed on the command line is never one of these


def method_options(pairs: Sequence[tuple[str, str, Any]], methods: Sequence[str]) -> dict[str, dict]:
    """Group ``--option`` values by method, checking each method runs, takes the option and the value's type."""
    from interpretorch.attribution.registry import canonical, get_method
    from interpretorch.metrics.evaluate import OPTION_GROUPS

    options: dict[str, dict] = {}
    for method, name, value in pairs:
        if method in OPTION_GROUPS:
            raise UserError(f"--option {method}.{name}: {method} is a metric, not a method; metric options apply "
                            f"to whole datasets (evaluate --data DIR --option {method}.{name}=...)")
        try:
            m = canonical(method)
        except (KeyError, ValueError) as e:
            raise UserError(f"--option {method}.{name}: {user_error_message(e)} (metric options: "
                            f"{', '.join(OPTION_GROUPS)})") from None
        if m not in methods:
            raise UserError(f"--option {method}.{name}: {m} is not among the methods run ({', '.join(methods)})")
        spec = get_method(m)
        try:
            spec.check_options({name: value})
        except TypeError as e:
            raise UserError(f"--option {method}.{name}: {e}") from None
        check_option_value(method, name, value, spec._params.get(name))  # noqa: SLF001 - the method's signature
        options.setdefault(m, {})[name] = value
    return options


def _expected_types(param: inspect.Parameter) -> tuple[type, ...] | None:
    """The Python types a command-line value of ``param`` may have (None: not known, anything goes)."""
    annotation = param.annotation
    if annotation is not inspect.Parameter.empty:
        words = set(re.findall(r"[A-Za-z_]+", str(annotation))) - _NOT_FROM_THE_CLI
        if not words or any(w not in _LITERAL_TYPES for w in words):
            return None
        return tuple(t for w in words for t in _LITERAL_TYPES[w])
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return None
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, (int, float, str)):
        return _LITERAL_TYPES[type(default).__name__]
    return None


def check_option_value(owner: str, name: str, value: Any, param: inspect.Parameter | None) -> None:
    """Raise a UserError when ``--option OWNER.NAME=VALUE`` has a type the option does not take."""
    types = None if param is None else _expected_types(param)
    if types is None:
        return
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if isinstance(value, float) and types and not math.isfinite(value) and ok:
        raise UserError(f"--option {owner}.{name}={value}: expected a finite number")
    if not ok:
        want = " or ".join(sorted({"True or False" if t is bool else "None" if t is type(None) else
                                   {"int": "an integer", "float": "a number", "str": "a string",
                                    "list": "a list", "tuple": "a list", "dict": "a dict"}.get(t.__name__, t.__name__)
                                   for t in types}))
        default = "" if param is None or param.default is inspect.Parameter.empty else \
            f" (default {param.default!r})"
        raise UserError(f"--option {owner}.{name}={value!r}: expected {want}{default}")


_METRIC_CALL_ARGUMENTS = {"model", "inputs", "maps", "target", "rule", "batch_size", "clean", "explain_fn", "boxes",
                          "masks"}


def metric_options(pairs: Sequence[tuple[str, str, Any]]) -> dict[str, dict]:
    """Group the ``--option METRIC.NAME=VALUE`` of metrics (deletion, insertion, road, ...) by metric, checking
    each metric takes the option and its value's type."""
    import interpretorch.metrics as metrics_module
    from interpretorch.metrics.evaluate import OPTION_GROUPS

    options: dict[str, dict] = {}
    for group, name, value in pairs:
        if group not in OPTION_GROUPS:
            continue
        params = inspect.signature(getattr(metrics_module, group)).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
        own = [n for n, p in params.items() if n not in _METRIC_CALL_ARGUMENTS
               and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if name in _METRIC_CALL_ARGUMENTS or (name not in own and not takes_any):
            raise UserError(f"--option {group}.{name}: the {group} metric takes no option {name!r}; it takes "
                            f"{', '.join(own) or 'none'}")
        check_option_value(group, name, value, params.get(name))
        options.setdefault(group, {})[name] = value
    return options
