"""``register_metric``: a metric describes itself (name, category, direction, unit, the map kinds it suits) and
brings the function that computes it; ``evaluate``, the dataset summary and the reports read these descriptions,
so adding a metric edits no table.

A metric's function is ``fn(ctx, method, explanation, **options) -> per-image values``: ``ctx`` is the
:class:`MetricContext` one ``evaluate`` call shares (model, checked inputs, target, channel rule, the clean
outputs, objects' boxes / masks, the re-explaining function), ``method`` the name the maps are evaluated under,
``options`` the metric's own keyword arguments (``evaluate(..., name={...})``). It returns a (B,) tensor (one
value per image, NaN where undefined), or, for a function that gives several figures at once (``gives``), a dict
``{figure name: entry}`` of ready entries (see :func:`entry`).

The categories are Quantus's taxonomy (Hedström et al. 2023): faithfulness, robustness, localisation,
complexity, randomisation, axiomatic.
"""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from interpretorch.core.targets import Target
from interpretorch.explanation import Explanation

ExplainFn = Callable[[nn.Module, torch.Tensor, Target], Explanation]
CATEGORIES = ("faithfulness", "robustness", "localisation", "complexity", "randomisation", "axiomatic")
DIRECTIONS = ("higher", "lower")
MAP_KINDS = ("region", "pixel", "token")
NEEDS = ("objects", "explain_fn", "image_set")


@dataclass(frozen=True)
class Figure:
    """One number a metric reports per method: how a table labels it, which way is better, its unit, its
    category and the map kinds it suits."""

    name: str
    label: str
    category: str
    direction: str
    unit: str = ""
    kinds: tuple[str, ...] = MAP_KINDS

    def better(self, values: Sequence[float]) -> float:
        """The best of ``values`` in this figure's direction."""
        return (min if self.direction == "lower" else max)(values)

    def suits(self, kind: str) -> bool:
        """Whether the figure is meaningful for maps of ``kind`` ("region", "pixel" or "token")."""
        return kind in self.kinds


@dataclass
class MetricContext:
    """What every metric of one ``evaluate`` call shares."""

    model: nn.Module
    inputs: torch.Tensor
    target: Target
    rule: str
    batch_size: int
    clean: Any
    boxes: Any = None
    masks: torch.Tensor | None = None
    explain_fn: ExplainFn | Mapping[str, ExplainFn] | None = None
    shared: dict[str, Any] = field(default_factory=dict)

    def explainer(self, method: str) -> ExplainFn:
        """The function re-explaining ``method``'s maps (``evaluate``'s ``explain_fn``: one callable, or one per
        method), or a ValueError saying how to give it."""
        fn = self.explain_fn.get(method) if isinstance(self.explain_fn, Mapping) else self.explain_fn
        if fn is None:
            raise ValueError(f"a metric re-explains {method!r} but evaluate got no explain_fn for it: pass "
                             "explain_fn=interpretorch.bind(method, layer=...) or a dict {method: callable} "
                             "(interpretorch.attribution.reexplainers(explanations) builds it)")
        return fn

    @property
    def common(self) -> dict[str, Any]:
        """The keyword arguments every model-based metric function takes: ``batch_size`` and ``clean``."""
        return {"batch_size": self.batch_size, "clean": self.clean}


@dataclass(frozen=True)
class Metric:
    """A registered metric: the function computing it and the figures it gives."""

    name: str
    fn: Callable[..., Any]
    figures: tuple[Figure, ...]
    default: bool = True
    needs: tuple[str, ...] = ()
    options: str | None = None
    protocol: tuple[str, ...] = ()
    defaults_from: Callable[..., Any] | None = None
    tidy: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    across: Callable[[MetricContext, Mapping[str, Mapping[str, Any]]], Mapping[str, torch.Tensor]] | None = None
    aliases: tuple[str, ...] = ()

    def settings(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The protocol this metric follows: its stated parameters' defaults, overridden by ``options``."""
        sig = inspect.signature(self.defaults_from or self.fn).parameters
        vals = {p: options.get(p, sig[p].default) for p in self.protocol if p in sig}
        return self.tidy(vals) if self.tidy is not None else vals


_METRICS: dict[str, Metric] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_metric(name: str, fn: Callable[..., Any] | None = None, *, category: str | None = None,
                    direction: str | None = None, unit: str = "", kinds: Sequence[str] = MAP_KINDS,
                    label: str | None = None, gives: Sequence[Figure] | None = None, default: bool = True,
                    needs: Sequence[str] = (), options: str | None = None, protocol: Sequence[str] = (),
                    defaults_from: Callable[..., Any] | None = None,
                    tidy: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                    across: Callable[[MetricContext, Mapping[str, Mapping[str, Any]]],
                                     Mapping[str, torch.Tensor]] | None = None,
                    aliases: Sequence[str] = (), replace: bool = False) -> Metric:
    """Add a metric under ``name``; returns its description.

    ``category`` (one of ``CATEGORIES``), ``direction`` ("higher" or "lower" is better), ``unit`` ("%" or ""),
    ``kinds`` (the map kinds it suits) and ``label`` (its table heading) describe the one figure it gives; a
    function giving several figures passes them as ``gives`` instead. ``default``: part of what ``evaluate``
    computes when no metric is named; ``needs``: "objects" (boxes or masks), "explain_fn" (it
    re-explains) and / or "image_set" (its values depend on the other images evaluated with it: one value across
    them, or per-image values relative to them); ``options``: the name of the keyword dict of ``evaluate`` it reads (default: its own name;
    metrics sharing a computation share it); ``protocol``: the parameters a report states, read from the
    signature of ``defaults_from`` (default: ``fn``), ``tidy`` dropping those that do not apply;
    ``across(ctx, results)``: a figure computed from every method's results together (Win %),
    giving {method: (B,) values}, instead of ``fn``.
    """
    key = _key(name)
    if fn is None and across is None:
        raise TypeError(f"metric {name!r} needs a function (fn) or a comparison across methods (across)")
    if fn is not None and not callable(fn):
        raise TypeError(f"a metric's function must be callable, got {type(fn).__name__}")
    if gives is None:
        if category not in CATEGORIES:
            raise ValueError(f"metric {name!r}: category must be one of {CATEGORIES}, got {category!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"metric {name!r}: direction must be 'higher' or 'lower' (is better), got {direction!r}")
        gives = (Figure(key, label or name, category, direction, unit, tuple(kinds)),)
    figures = tuple(gives)
    for f in figures:
        if f.category not in CATEGORIES or f.direction not in DIRECTIONS:
            raise ValueError(f"figure {f.name!r}: category one of {CATEGORIES}, direction one of {DIRECTIONS}")
        bad = [k for k in f.kinds if k not in MAP_KINDS]
        if bad:
            raise ValueError(f"figure {f.name!r}: unknown map kind(s) {bad}; choose from {MAP_KINDS}")
    bad = [n for n in needs if n not in NEEDS]
    if bad:
        raise ValueError(f"metric {name!r}: unknown need(s) {bad}; choose from {NEEDS}")
    names = [key] + [_key(a) for a in aliases]
    if any(n in CATEGORIES for n in names):
        raise ValueError(f"metric {name!r}: a metric may not be named after a family ({', '.join(CATEGORIES)}); "
                         "those names select every metric of the family")
    if not replace:
        taken = [n for n in names if n in _METRICS or n in _ALIASES]
        taken += [f.name for f in figures if f.name != key and any(f.name in {g.name for g in m.figures}
                                                                   for m in _METRICS.values())]
        if taken:
            raise ValueError(f"metric name(s) {taken} are already registered; pass replace=True to override")
    metric = Metric(key, fn, figures, default, tuple(needs), options or key, tuple(protocol), defaults_from, tidy,
                    across, tuple(_key(a) for a in aliases))
    _METRICS[key] = metric
    for a in metric.aliases:
        _ALIASES[a] = key
    return metric


def unregister_metric(name: str) -> None:
    """Remove a metric registered with ``register_metric`` (and its aliases)."""
    key = _key(name)
    metric = _METRICS.pop(key)
    for a in metric.aliases:
        _ALIASES.pop(a, None)


def metrics() -> list[Metric]:
    """Every registered metric, in registration order."""
    return list(_METRICS.values())


def available_metrics() -> list[str]:
    """Every registered metric's name, in registration order."""
    return list(_METRICS)


def default_metrics() -> list[str]:
    """The metrics ``evaluate`` computes when none are named."""
    return [m.name for m in _METRICS.values() if m.default]


def get_metric(name: str) -> Metric:
    """The metric named ``name`` (or an alias, or one of the figures it gives), or a ValueError naming the
    closest ones."""
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key in _METRICS:
        return _METRICS[key]
    for m in _METRICS.values():
        if any(f.name == key for f in m.figures):
            return m
    close = difflib.get_close_matches(key, list(_METRICS) + list(figures()), n=3)
    raise ValueError(f"unknown metric {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                     + f" Available: {', '.join(_METRICS)}")


def option_groups() -> list[str]:
    """The names of the keyword dicts ``evaluate`` accepts, one per metric computation."""
    return list(dict.fromkeys(m.options for m in _METRICS.values() if m.options))


def figures() -> dict[str, Figure]:
    """Every figure the registered metrics give, by name, in registration order (what tables show)."""
    return {f.name: f for m in _METRICS.values() for f in m.figures}


def resolve_metrics(names: str | Sequence[str] | None) -> list[str]:
    """Registered metric names of ``names``: None (the defaults), "all", one name or several (aliases, the
    figure names a metric gives, e.g. "road_lerf", and category names, e.g. "complexity": every metric of that
    family, are accepted)."""
    if names is None:
        return default_metrics()
    if names == "all":
        return available_metrics()
    out: list[str] = []
    for n in [names] if isinstance(names, str) else list(names):
        keys = family(n) if _key(n) in CATEGORIES else [get_metric(n).name]
        out.extend(k for k in keys if k not in out)
    return out


def family(category: str) -> list[str]:
    """The registered metrics of ``category`` (one of ``CATEGORIES``), in registration order."""
    key = _key(category)
    if key not in CATEGORIES:
        raise ValueError(f"unknown metric family {category!r}; choose from {', '.join(CATEGORIES)}")
    return [m.name for m in _METRICS.values() if any(f.category == key for f in m.figures)]


class FigureTable(Mapping):
    """The registered figures as {name: (label, direction, unit)}, read live from the registry."""

    def __getitem__(self, name: str) -> tuple[str, str, str]:
        f = figures()[name]
        return f.label, f.direction, f.unit

    def __iter__(self):
        return iter(figures())

    def __len__(self) -> int:
        return len(figures())


def entry(per_image: torch.Tensor) -> dict[str, Any]:
    """A figure's JSON-ready entry from (B,) per-image values: ``value`` (the mean of the defined ones, None when
    none is) and ``per_image`` (None where undefined)."""
    vals = per_image.detach().double().cpu()
    finite = vals[torch.isfinite(vals)]
    value = float(finite.mean()) if finite.numel() else None
    return {"value": value,
            "per_image": [None if (isinstance(v, float) and not math.isfinite(v)) else v for v in vals.tolist()]}


def spread(per_image: Sequence[float | None]) -> dict[str, Any]:
    """``n`` (values that are defined) and ``std`` (their sample standard deviation, None below two)."""
    vals = [float(v) for v in per_image if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n < 2:
        return {"n": n, "std": None}
    mean = sum(vals) / n
    return {"n": n, "std": math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))}
