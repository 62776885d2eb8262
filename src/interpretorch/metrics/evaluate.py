"""``evaluate``: every metric for every method's maps, sharing one clean forward pass, as JSON-ready dicts."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from interpretorch.explanation import Explanation
from interpretorch.metrics._common import prepare
from interpretorch.metrics.faithfulness import confidence, deletion, insertion, road, win_percentage
from interpretorch.metrics.localisation import Boxes, energy_pointing_game, pointing_game
from interpretorch.metrics.robustness import infidelity, max_sensitivity
from interpretorch.core.targets import Target

# name -> (label for a table, "lower" / "higher" is better, unit)
METRIC_INFO: dict[str, tuple[str, str, str]] = {
    "average_drop": ("Average Drop", "lower", "%"),
    "increase_in_confidence": ("Increase in Confidence", "higher", "%"),
    "win": ("Win", "higher", "%"),
    "deletion": ("Deletion AUC", "lower", ""),
    "insertion": ("Insertion AUC", "higher", ""),
    "road_morf": ("ROAD MoRF", "lower", ""),
    "road_lerf": ("ROAD LeRF", "higher", ""),
    "pointing_game": ("Pointing game", "higher", ""),
    "energy_pointing_game": ("Energy pointing game", "higher", ""),
    "infidelity": ("Infidelity", "lower", ""),
    "max_sensitivity": ("Max-Sensitivity", "lower", ""),
}
# What metrics=None computes; max_sensitivity re-explains every noisy copy, so it is asked for by name.
# The localisation metrics run only when boxes or masks are given.
DEFAULT_METRICS = ("average_drop", "increase_in_confidence", "win", "deletion", "insertion", "road",
                   "pointing_game", "energy_pointing_game", "infidelity")
ALL_METRICS = DEFAULT_METRICS + ("max_sensitivity",)
_ALIASES = {"road_morf": "road", "road_lerf": "road", "confidence": "average_drop"}
# Keyword groups accepted in **options: one dict of keyword arguments per metric function.
OPTION_GROUPS = ("confidence", "deletion", "insertion", "road", "pointing_game", "energy_pointing_game",
                 "infidelity", "max_sensitivity")
SHARED_OPTIONS = ("rule", "explain_fn")


def _clean_list(values: torch.Tensor) -> list:
    return [None if (isinstance(v, float) and not math.isfinite(v)) else v for v in values.tolist()]


def _entry(per_image: torch.Tensor) -> dict[str, Any]:
    vals = per_image.detach().double().cpu()
    finite = vals[torch.isfinite(vals)]
    value = float(finite.mean()) if finite.numel() else None
    return {"value": value, "per_image": _clean_list(vals)}


def _resolve_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    if metrics is None:
        return list(DEFAULT_METRICS)
    if metrics == "all":
        return list(ALL_METRICS)
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    out: list[str] = []
    for n in names:
        key = n.strip().lower().replace("-", "_")
        key = _ALIASES.get(key, key)
        if key not in ALL_METRICS:
            import difflib

            close = difflib.get_close_matches(key, ALL_METRICS, n=3)
            raise ValueError(f"unknown metric {n!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                             + f" Available: {', '.join(ALL_METRICS)}")
        if key not in out:
            out.append(key)
    return out


def _default_explain_fn(exp: Explanation) -> Callable[[nn.Module, torch.Tensor, Target], Explanation]:
    from interpretorch.attribution.registry import bind, get_method

    spec = get_method(exp.method)
    return bind(spec.name, layer=exp.layer) if spec.needs_layer else bind(spec.name)


@dataclass
class _Context:
    """What every metric of one ``evaluate`` call shares."""

    model: nn.Module
    x: torch.Tensor
    target: Target
    rule: str
    common: dict[str, Any]
    opt: dict[str, dict]
    boxes: Boxes | None
    masks: torch.Tensor | None
    wanted: list[str]
    options: Mapping[str, Any]
    drops: dict[str, torch.Tensor]


def _confidence(c: _Context, name: str, exp: Explanation) -> dict[str, Any]:
    conf = confidence(c.model, c.x, exp, c.target, rule=c.rule, **c.common, **c.opt["confidence"])
    c.drops[name] = conf.drop
    return {"average_drop": _entry(conf.drop * 100), "increase_in_confidence": _entry(conf.increase * 100)}


def _curve(fn: Callable[..., Any], key: str) -> Callable[[_Context, str, Explanation], dict[str, Any]]:
    def compute(c: _Context, name: str, exp: Explanation) -> dict[str, Any]:
        return {key: fn(c.model, c.x, exp, c.target, rule=c.rule, **c.common, **c.opt[key]).to_dict()}
    return compute


def _road(c: _Context, name: str, exp: Explanation) -> dict[str, Any]:
    r = road(c.model, c.x, exp, c.target, rule=c.rule, **c.common, **c.opt["road"])
    return {f"road_{o}": r.to_dict(o) for o in ("morf", "lerf") if getattr(r, f"{o}_scores") is not None}


def _pointing(fn: Callable[..., torch.Tensor], key: str) -> Callable[[_Context, str, Explanation], dict[str, Any]]:
    def compute(c: _Context, name: str, exp: Explanation) -> dict[str, Any]:
        return {key: _entry(fn(exp, boxes=c.boxes, masks=c.masks, rule=c.rule, **c.opt[key]))}
    return compute


def _infidelity(c: _Context, name: str, exp: Explanation) -> dict[str, Any]:
    return {"infidelity": _entry(infidelity(c.model, c.x, exp, c.target, **c.common, **c.opt["infidelity"]))}


def _max_sensitivity(c: _Context, name: str, exp: Explanation) -> dict[str, Any]:
    fn = c.options.get("explain_fn")
    if isinstance(fn, Mapping):
        fn = fn.get(name)
    if fn is None:
        fn = _default_explain_fn(exp)
    return {"max_sensitivity": _entry(max_sensitivity(c.model, c.x, exp, c.target, explain_fn=fn, **c.common,
                                                      **c.opt["max_sensitivity"]))}


# computation -> (the metrics it gives, how to compute them for one method's maps); "win" comes from the drops.
METRICS: dict[str, tuple[tuple[str, ...], Callable[[_Context, str, Explanation], dict[str, Any]]]] = {
    "confidence": (("average_drop", "increase_in_confidence", "win"), _confidence),
    "deletion": (("deletion",), _curve(deletion, "deletion")),
    "insertion": (("insertion",), _curve(insertion, "insertion")),
    "road": (("road",), _road),
    "pointing_game": (("pointing_game",), _pointing(pointing_game, "pointing_game")),
    "energy_pointing_game": (("energy_pointing_game",), _pointing(energy_pointing_game, "energy_pointing_game")),
    "infidelity": (("infidelity",), _infidelity),
    "max_sensitivity": (("max_sensitivity",), _max_sensitivity),
}


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
    ``ALL_METRICS`` ("road" gives road_morf and road_lerf). ``options``: ``rule`` (channel reduction
    of pixel attributions, default "abs_sum"), ``explain_fn`` (for max_sensitivity: a callable
    ``(model, inputs, target) -> Explanation``, or a dict method -> callable; default: the registry
    method of the same name and layer), and one dict of keyword arguments per metric function named
    in ``OPTION_GROUPS``, e.g. ``deletion={"step": 0.05, "substrate": "blur"}``, ``road={"percentages":
    [20, 50, 80]}``, ``pointing_game={"tolerance": 4}``, ``confidence={"softmax": False}``.

    Each method's dict holds, for every metric computed, an entry
    ``{"value": float | None, "per_image": [float | None, ...]}``; ``value`` is the mean over images
    with a defined value (None / NaN-free JSON otherwise) and is what a table shows (see
    ``METRIC_INFO`` for labels, units and direction):

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
    wanted = _resolve_metrics(metrics)
    unknown = [k for k in options if k not in OPTION_GROUPS and k not in SHARED_OPTIONS]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; give per-metric keyword dicts named "
                         f"{', '.join(OPTION_GROUPS)} or the shared options {', '.join(SHARED_OPTIONS)}")
    for k in OPTION_GROUPS:
        if k in options and not isinstance(options[k], Mapping):
            raise TypeError(f"option {k!r} must be a dict of keyword arguments for that metric")
    have_objects = boxes is not None or masks is not None
    explicit = metrics is not None and metrics != "all"
    if not have_objects:
        missing = [m for m in ("pointing_game", "energy_pointing_game") if m in wanted]
        if missing and explicit:
            raise ValueError(f"{', '.join(missing)} need boxes= or masks= with the objects' locations")
        wanted = [m for m in wanted if m not in missing]
    rule = options.get("rule", "abs_sum")
    opt = {k: dict(options.get(k, {})) for k in OPTION_GROUPS}

    scorer, cl = prepare(model, inputs, target, batch_size, clean=outputs)
    ctx = _Context(model, cl.inputs, target, rule, dict(batch_size=scorer.batch_size, clean=cl.outputs), opt, boxes,
                   masks, wanted, options, {})
    results: dict[str, dict] = {}
    computations = [(key, gives, compute) for key, (gives, compute) in METRICS.items() if set(gives) & set(wanted)]
    total, done = len(explanations) * len(computations), 0
    for name, exp in explanations.items():
        _check_target(name, exp, cl.idx)
    for name, exp in explanations.items():
        res: dict[str, Any] = {"target": None if cl.idx is None else cl.idx.tolist()}
        for key, gives, compute in computations:
            res.update({k: v for k, v in compute(ctx, name, exp).items() if k in wanted or k.startswith("road_")})
            done += 1
            if progress is not None:
                progress(done, total, f"{name}: {key}")
        results[name] = res
    if "win" in wanted:
        for name, share in win_percentage(ctx.drops).items():
            results[name]["win"] = _entry(share)
    # Keep the metric order of METRIC_INFO in every method's dict.
    order = ["target"] + list(METRIC_INFO)
    out = {name: {k: res[k] for k in order if k in res} for name, res in results.items()}
    for res in out.values():
        for k, entry in res.items():
            if isinstance(entry, dict) and "per_image" in entry:
                entry.update(spread(entry["per_image"]))
    return out


def spread(per_image: Sequence[float | None]) -> dict[str, Any]:
    """``n`` (values that are defined) and ``std`` (their sample standard deviation, None below two)."""
    vals = [float(v) for v in per_image if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n < 2:
        return {"n": n, "std": None}
    mean = sum(vals) / n
    return {"n": n, "std": math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))}


# Which function's defaults describe each computation's protocol, and the parameters worth stating.
_PROTOCOL: dict[str, tuple[str, tuple[str, ...]]] = {
    "confidence": ("confidence", ("baseline", "softmax")),
    "deletion": ("deletion", ("substrate", "step", "softmax", "blur_sigma", "blur_kernel")),
    "insertion": ("insertion", ("substrate", "step", "softmax", "blur_sigma", "blur_kernel")),
    "road": ("road", ("percentages", "noise", "softmax", "seed")),
    "infidelity": ("infidelity", ("perturbation", "n_perturb", "sigma", "seed")),
    "max_sensitivity": ("max_sensitivity", ()),
    "pointing_game": ("pointing_game", ()),
    "energy_pointing_game": ("energy_pointing_game", ()),
}


def protocol(metrics: str | Sequence[str] | None = None, **options: Any) -> dict[str, dict[str, Any]]:
    """The settings each metric computation of an ``evaluate`` call uses (its defaults overridden by
    ``options``), JSON-ready: e.g. ``{"deletion": {"substrate": "zeros", "step": 0.01, ...}, ...}``."""
    import inspect

    from interpretorch.metrics import faithfulness, localisation, robustness

    wanted = set(_resolve_metrics(metrics))
    out: dict[str, dict[str, Any]] = {}
    for key, (gives, _) in METRICS.items():
        if not set(gives) & wanted:
            continue
        fname, params = _PROTOCOL[key]
        fn = next(getattr(m, fname) for m in (faithfulness, robustness, localisation) if hasattr(m, fname))
        sig = inspect.signature(fn).parameters
        given = dict(options.get(key, {}))
        vals = {p: given.get(p, sig[p].default) for p in params if p in sig}
        if "substrate" in vals and vals["substrate"] != "blur":
            vals.pop("blur_sigma", None)
            vals.pop("blur_kernel", None)
        out[key] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vals.items()
                    if isinstance(v, (str, int, float, bool, tuple, list))}
    if "rule" in options:
        out["rule"] = {"rule": options["rule"]}
    return out
