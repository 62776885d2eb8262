"""``evaluate``: every metric for every method's maps, sharing one clean forward pass, as JSON-ready dicts."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from interpretorch.core.targets import Target, describe_target
from interpretorch.explanation import Explanation
from interpretorch.metrics import builtin  # noqa: F401 - registers the built-in metrics
from interpretorch.metrics._common import prepare
from interpretorch.metrics.faithfulness import win_percentage
from interpretorch.metrics.localisation import Boxes
from interpretorch.metrics.registry import (FigureTable, Metric, MetricContext, default_metrics, entry, figures,
                                            option_groups, resolve_metrics, spread)
from interpretorch.metrics.registry import metrics as registered_metrics

__all__ = ["evaluate", "protocol", "win_within", "resolve_metrics", "spread", "METRIC_INFO", "DEFAULT_METRICS",
           "ALL_METRICS", "OPTION_GROUPS", "SHARED_OPTIONS"]

# {figure: (label, "lower" / "higher" is better, unit)}, read live from the metric registry.
METRIC_INFO = FigureTable()
# The built-in metrics (a snapshot; the registry's default_metrics() / available_metrics() include later ones).
# max_sensitivity re-explains every noisy copy, so it is asked for by name; the localisation metrics run only
# when boxes or masks are given.
DEFAULT_METRICS = tuple(default_metrics())
ALL_METRICS = tuple(resolve_metrics("all"))
OPTION_GROUPS = tuple(option_groups())
SHARED_OPTIONS = ("rule", "explain_fn")


def _in_order(metrics: str | Sequence[str] | None) -> list[Metric]:
    """The metrics asked for, in the registry's order."""
    names = set(resolve_metrics(metrics))
    return [m for m in registered_metrics() if m.name in names]


def _check_target(name: str, exp: Explanation, idx: torch.Tensor | None) -> None:
    if exp.target is None or idx is None:
        return
    t = exp.target.detach().to(idx.device).reshape(-1)
    if t.numel() != idx.numel() or not torch.equal(t.long(), idx.long()):
        raise ValueError(f"explanation {name!r} explains classes {t.tolist()} but the evaluation target gives "
                         f"{idx.tolist()}; evaluate with the target the maps were computed for")


def evaluate(model: nn.Module, inputs: torch.Tensor, explanations: Mapping[str, Explanation], *,
             target: Target = "top1", batch_size: int | None = None, boxes: Boxes | None = None,
             masks: torch.Tensor | None = None, metrics: str | Sequence[str] | None = None,
             progress: Callable[[int, int, str], None] | None = None, outputs: torch.Tensor | None = None,
             **options: Any) -> dict[str, dict]:
    """Evaluate each method's maps with the saliency metrics; returns {method: {metric: entry}}, JSON-ready.

    The clean forward pass runs once for all methods and metrics (not at all when ``outputs``, the model's
    outputs on ``inputs``, are given, e.g. ``RunResult.outputs``), the given maps are used as they
    are (only ``max_sensitivity`` re-explains noisy copies, by definition), and perturbed inputs go
    through the model ``batch_size`` at a time.

    ``metrics``: None (``DEFAULT_METRICS``: all but max_sensitivity; the pointing games only with
    ``boxes`` (B, 4) / list of (K, 4), or ``masks`` (B, H, W)), "all", or a list of names from
    the registered metrics (``register_metric``; "road" gives road_morf and road_lerf). ``options``: ``rule``
    (channel reduction of pixel attributions, default "abs_sum"), ``explain_fn`` (what re-explains for
    max_sensitivity: a callable ``(model, inputs, target) -> Explanation`` such as ``interpretorch.bind(...)``,
    or a dict method -> callable, e.g. ``interpretorch.attribution.reexplainers(explanations)``), and one dict
    of keyword arguments per metric computation named in ``option_groups()``, e.g.
    ``deletion={"step": 0.05, "substrate": "blur"}``, ``road={"percentages":
    [20, 50, 80]}``, ``pointing_game={"tolerance": 4}``, ``confidence={"softmax": False}``.

    Each method's dict holds, for every metric computed, an entry
    ``{"value": float | None, "per_image": [float | None, ...]}``; ``value`` is the mean over images
    with a defined value (None / NaN-free JSON otherwise) and is what a table shows (each metric's
    registered figures give labels, units and direction):

    - ``average_drop`` (%), per image ``100 * max(0, Y - O) / Y``; ``increase_in_confidence`` (%),
      per image 100 or 0; ``win`` (%), per image 100 / (number of methods tied for the lowest drop)
      or 0 - all with class probabilities by default (``confidence={"softmax": False}`` for logits).
    - ``deletion`` / ``insertion``: ``value`` mean AUC, ``per_image`` AUCs, plus ``x`` (fractions of
      pixels changed, 0..1), ``curve`` (mean score per step) and ``curves`` (per image).
    - ``road_morf`` / ``road_lerf``: ``value`` mean accuracy over images and percentages (mean score
      for callable targets), ``per_image``, ``x`` (percentages), ``curve`` (accuracy per percentage),
      ``score_curve`` (mean target probability), ``curves``, ``measure``.
    - ``pointing_game`` (hit rate, ties count fractionally), ``energy_pointing_game`` (share of the
      map's positive energy on the object): per image values, None where the image has no object.
    - ``infidelity``, ``max_sensitivity``: per-image values.

    Every entry with ``per_image`` values also holds ``n`` (images with a defined value) and ``std`` (their
    sample standard deviation; None below two). Each method's dict also holds ``"target"``: the explained class
    per image (None for callables). ``progress(done, total, label)`` is called after each metric computation
    of each method (``label`` like ``"gradcam: deletion"``).
    """
    if not isinstance(explanations, Mapping) or not explanations:
        raise ValueError("explanations must be a non-empty dict {method name: Explanation}")
    for name, exp in explanations.items():
        if not isinstance(exp, Explanation):
            raise TypeError(f"explanations[{name!r}] is a {type(exp).__name__}, not an Explanation")
    wanted = _in_order(metrics)
    groups = option_groups()
    unknown = [k for k in options if k not in groups and k not in SHARED_OPTIONS]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; give per-metric keyword dicts named "
                         f"{', '.join(groups)} or the shared options {', '.join(SHARED_OPTIONS)}")
    for k in groups:
        if k in options and not isinstance(options[k], Mapping):
            raise TypeError(f"option {k!r} must be a dict of keyword arguments for that metric")
    if boxes is None and masks is None:
        missing = [m.name for m in wanted if "objects" in m.needs]
        if missing and metrics is not None and metrics != "all":
            raise ValueError(f"{', '.join(missing)} need boxes= or masks= with the objects' locations")
        wanted = [m for m in wanted if m.name not in missing]

    scorer, cl = prepare(model, inputs, target, batch_size, clean=outputs)
    ctx = MetricContext(model, cl.inputs, scorer.target if cl.target_objects else target,
                        options.get("rule", "abs_sum"), scorer.batch_size, cl.outputs, boxes, masks,
                        options.get("explain_fn"))
    asked = {f.name for m in wanted for f in m.figures}
    per_method = [m for m in wanted if m.fn is not None]
    total, done = len(explanations) * len(per_method), 0
    for name, exp in explanations.items():
        _check_target(name, exp, cl.idx)
    results: dict[str, dict] = {}
    for name, exp in explanations.items():
        res: dict[str, Any] = {"target": describe_target(scorer.target) if cl.target_objects
                               else None if cl.idx is None else cl.idx.tolist()}
        for m in per_method:
            got = m.fn(ctx, name, exp, **dict(options.get(m.options, {})))
            res.update(got if isinstance(got, Mapping) else {m.figures[0].name: entry(got)})
            done += 1
            if progress is not None:
                progress(done, total, f"{name}: {m.name}")
        results[name] = {k: v for k, v in res.items() if k == "target" or k in asked}
    for m in wanted:
        if m.across is not None:
            for name, values in m.across(ctx, results).items():
                results[name][m.figures[0].name] = entry(values)
    # Keep the registry's figure order in every method's dict.
    order = ["target"] + list(figures())
    out = {name: {k: res[k] for k in order if k in res} for name, res in results.items()}
    for res in out.values():
        for k, e in res.items():
            if isinstance(e, dict) and "per_image" in e:
                e.update(spread(e["per_image"]))
    return out


def win_within(evaluation: Mapping[str, Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Win % among ``methods`` only (a report's table of one map kind), from their per-image Average Drop in an
    ``evaluate`` result; {} when one of them has no Average Drop."""
    drops = {}
    for m in methods:
        per = evaluation[m].get("average_drop", {}).get("per_image")
        if per is None:
            return {}
        drops[m] = torch.tensor([float("nan") if v is None else v for v in per], dtype=torch.float64)
    out = {}
    for m, share in win_percentage(drops).items():
        per = share.tolist()
        out[m] = {"value": float(share.mean()), "per_image": per, **spread(per)}
    return out


def protocol(metrics: str | Sequence[str] | None = None, **options: Any) -> dict[str, dict[str, Any]]:
    """The settings each metric computation of an ``evaluate`` call uses (its defaults overridden by
    ``options``), JSON-ready: e.g. ``{"deletion": {"substrate": "zeros", "step": 0.01, ...}, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for m in _in_order(metrics):
        if m.options is None or m.options in out:
            continue
        vals = m.settings(dict(options.get(m.options, {})))
        out[m.options] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vals.items()
                          if isinstance(v, (str, int, float, bool, tuple, list))}
    if "rule" in options:
        out["rule"] = {"rule": options["rule"]}
    return out
