"""Run the sanity checks of Adebayo et al. 2018 for any methods and turn the similarities into verdicts.

``model_randomization`` explains the inputs once with the trained model, then with each randomized copy
(``randomize.randomized_models``), always for the class the trained model was asked about (the paper explains
the same class at every step; its notebook re-took the top-1 class of each randomized network instead), and
compares every map with the original one (``similarity.compare``). ``data_randomization`` does the same for
a model trained on permuted labels. Both return a ``SanityResult`` holding every number behind the verdicts.

Verdict: a method *passes* a test when the mean over images of its similarity to the original (``metric``,
default Spearman rank correlation of the absolute maps) falls below ``threshold`` (default 0.5) at some step up
to ``by_step``. ``by_step`` is a step index, a step name, or a fraction of the steps (default 0.5: by the time
the top half of the blocks have been randomized, cascading; among the top half of the blocks, independent; the
one step of the data test). Every default is a field of ``VerdictRule``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import torch
from torch import nn

from interpretorch.attribution.registry import BoundMethod, bind, get_method
from interpretorch.core import check_inputs
from interpretorch.core.targets import Target, check_target, target_kind
from interpretorch.explanation import Explanation
from interpretorch.models.layers import layer_name
from interpretorch.sanity.cascade import PrefixCache
from interpretorch.sanity.randomize import Block, plan_steps, randomization_blocks, randomized_models
from interpretorch.sanity.similarity import METRICS, Reference, baselines, compare


# The lowest value each similarity metric takes: a threshold at or below it can never be passed.
THRESHOLD_FLOOR = {"spearman_abs": 0.0, "topk": 0.0, "spearman": -1.0, "ssim": -1.0, "hog": -1.0}


@dataclass(frozen=True)
class VerdictRule:
    """When a method passes: mean ``metric`` below ``threshold`` at some step up to ``by_step``."""

    metric: str = "spearman_abs"
    threshold: float = 0.5
    by_step: int | str | float = 0.5

    def __post_init__(self) -> None:
        lo = THRESHOLD_FLOOR.get(self.metric, -1.0)
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not lo < t <= 1.0:
            raise ValueError(f"threshold must be a number in ({lo:g}, 1] for {self.metric} (a method passes "
                             f"when its similarity falls below it), got {t!r}")

    def step_index(self, steps: Sequence[str]) -> int:
        """The last step (index) the similarity may take to fall below the threshold."""
        n = len(steps)
        b = self.by_step
        if isinstance(b, str):
            if b not in steps:
                raise ValueError(f"by_step {b!r} is not a step; steps are {list(steps)}")
            return list(steps).index(b)
        if isinstance(b, float):
            if not 0 < b <= 1:
                raise ValueError(f"by_step as a fraction of the steps must be in (0, 1], got {b}")
            return max(0, math.ceil(b * n) - 1)
        if isinstance(b, int) and not isinstance(b, bool):
            if not -n <= b < n:
                raise ValueError(f"by_step {b} is out of range for {n} steps")
            return b % n
        raise TypeError(f"by_step must be a step index, a step name or a fraction, got {b!r}")


@dataclass
class Verdict:
    """Whether a method passed, and the numbers that decided it."""

    passes: bool
    metric: str
    threshold: float
    by_step: str
    by_step_index: int
    value: float | None  # lowest mean similarity up to by_step (None when undefined at every step)
    fell_below_at: str | None  # first step whose mean similarity is below the threshold

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain JSON-ready values."""
        return {"passes": self.passes, "threshold": self.threshold, "metric": self.metric, "by_step": self.by_step,
                "by_step_index": self.by_step_index, "value": self.value, "fell_below_at": self.fell_below_at}


def _nanmean(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.nanmean(t.to(torch.float64), dim=dim)


def _json_float(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) else v


def decide(values: torch.Tensor, steps: Sequence[str], rule: VerdictRule) -> Verdict:
    """Verdict from per-image similarities (B, S) of ``rule.metric``."""
    idx = rule.step_index(steps)
    means = _nanmean(values, 0)
    upto = means[:idx + 1]
    finite = upto[~torch.isnan(upto)]
    below = [i for i in range(idx + 1) if not math.isnan(float(means[i])) and float(means[i]) < rule.threshold]
    return Verdict(passes=bool(below), metric=rule.metric, threshold=rule.threshold, by_step=steps[idx],
                   by_step_index=idx, value=float(finite.min()) if finite.numel() else None,
                   fell_below_at=steps[below[0]] if below else None)


@dataclass
class SanityResult:
    """Similarities of each method's randomized maps to its original maps, per metric, step and image."""

    mode: str
    steps: list[str]
    step_blocks: list[list[str]]
    methods: list[str]
    similarity: dict[str, dict[str, torch.Tensor]]  # method -> metric -> (B, S)
    baselines: dict[str, dict[str, dict[str, torch.Tensor]]]  # kind -> method -> metric -> (B,)
    verdicts: dict[str, Verdict]
    target: torch.Tensor | None
    original_maps: dict[str, torch.Tensor] = field(default_factory=dict)  # method -> (K, ...) first K images
    step_maps: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # method -> S x (K, ...)
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def mean(self, method: str, metric: str) -> list[float | None]:
        """Mean over images of ``metric`` at each step (None where undefined for every image)."""
        return [_json_float(v) for v in _nanmean(self.similarity[method][metric], 0)]

    def to_json(self) -> dict[str, Any]:
        """The ``sanity.json`` structure (NaN written as null)."""
        methods = {}
        for m in self.methods:
            entry: dict[str, Any] = {}
            for metric, vals in self.similarity[m].items():
                entry[metric] = {"mean": self.mean(m, metric),
                                 "per_image": [[_json_float(v) for v in row] for row in vals.tolist()]}
            entry["verdict"] = self.verdicts[m].to_dict()
            methods[m] = entry
        base = {kind: {m: {metric: {"mean": _json_float(_nanmean(v, 0)), "per_image": [_json_float(x) for x in v]}
                           for metric, v in per_method.items()} for m, per_method in by_method.items()}
                for kind, by_method in self.baselines.items()}
        return {"mode": self.mode, "steps": list(self.steps), "step_blocks": self.step_blocks, "methods": methods,
                "baselines": base, "target": None if self.target is None else self.target.tolist(),
                "config": self.config, "seconds": self.seconds}


MethodLike = Union[str, BoundMethod]


def bind_methods(model: nn.Module, methods: MethodLike | Sequence[MethodLike], layer: str | nn.Module | None = None,
                 batch_size: int | None = None, options: dict[str, dict] | None = None) -> list[BoundMethod]:
    """Method names (or ``interpretorch.bind`` results) as bound methods; ``layer`` goes to the layer methods,
    always as a dotted name so that it also designates the layer of ``model``'s copies."""
    items = [methods] if isinstance(methods, (str, BoundMethod)) else list(methods)
    if not items:
        raise ValueError("no methods to check; name at least one")
    if layer is not None:
        layer = layer_name(model, layer)
    options = {get_method(k).name: dict(v) for k, v in (options or {}).items()}
    bound = []
    for m in items:
        if isinstance(m, BoundMethod):
            if m.layer is not None and not isinstance(m.layer, str):
                m = bind(m.name, layer=layer_name(model, m.layer), batch_size=m.batch_size, **m.options)
            bound.append(m)
            continue
        spec = get_method(m)
        kw = options.get(spec.name, {})
        if spec.needs_layer and layer is not None:
            kw.setdefault("layer", layer)
        if batch_size is not None:
            kw.setdefault("batch_size", batch_size)
        bound.append(bind(spec.name, **kw))
    names = [b.name for b in bound]
    if len(set(names)) != len(names):
        raise ValueError(f"a method is named twice: {names}")
    stray = [k for k in options if k not in names]
    if stray:
        raise ValueError(f"options given for {', '.join(stray)}, which is not among the methods run "
                         f"({', '.join(names)})")
    return bound


class _Explainer:
    """Explains a batch with each bound method, for the classes the trained model was asked about."""

    def __init__(self, methods: list[BoundMethod], target: Target) -> None:
        self.methods, self.target = methods, target
        self.used_layer: str | None = None

    def _run(self, model: nn.Module, x: torch.Tensor) -> dict[str, Explanation]:
        return {b.name: b(model, x, self.target) for b in self.methods}

    def __call__(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {m: e.maps.detach() for m, e in self._run(model, x).items()}

    def original(self, model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Explain with the trained model, then fix its explained classes for every later model."""
        out = self._run(model, x)
        self.used_layer = next((e.layer for e in out.values() if e.layer is not None), None)
        idx = next((e.target for e in out.values() if e.target is not None), None)
        if idx is not None:  # "top1" or indices -> the original model's classes (validated by the method)
            self.target = idx.detach()
        return {m: e.maps.detach() for m, e in out.items()}, idx


def _prepare(model: nn.Module, inputs: torch.Tensor, methods, target, layer, batch_size, options, metrics,
             rule):
    bound = bind_methods(model, methods, layer, batch_size, options)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown similarity metric(s) {unknown or list(metrics)}; choose from {METRICS}")
    if rule.metric not in metrics:
        raise ValueError(f"the verdict metric {rule.metric!r} is not among the metrics computed {list(metrics)}")
    x = check_inputs(model, inputs)
    if target_kind(target) not in ("class", "callable"):  # target objects: bound once, so every randomised
        target = check_target(target, x.shape[0])        # model is scored against the trained model's objects
    return [b.name for b in bound], x, _Explainer(bound, target)


def _collect(mode, steps, step_blocks, names, original, per_step, x, idx, metrics, metric_options, rule,
             keep_maps, config, started, seed) -> SanityResult:
    sims = {m: {k: torch.stack([s[m][k] for s in per_step["sims"]], 1) for k in metrics} for m in names}
    base: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for m in names:
        for kind, vals in baselines(original[m], x, metrics, seed=seed, options=metric_options).items():
            base.setdefault(kind, {})[m] = vals
    verdicts = {m: decide(sims[m][rule.metric], steps, rule) for m in names}
    k = keep_maps
    return SanityResult(mode, list(steps), step_blocks, names, sims, base, verdicts, idx,
                        {m: original[m][:k].cpu() for m in names} if k else {},
                        {m: [s[m] for s in per_step["maps"]] for m in names} if k else {},
                        config, time.perf_counter() - started)


def model_randomization(model: nn.Module, inputs: torch.Tensor,
                        methods: MethodLike | Sequence[MethodLike] = ("gradient",),
                        *, mode: str = "cascading", blocks: Sequence[str] | None = None,
                        granularity: str = "stages", init: str = "reset", std: float = 0.01,
                        reset_running_stats: bool = False, seed: int = 0, seeding: str = "per_block",
                        target: Target = "top1",
                        layer: str | nn.Module | None = None, batch_size: int | None = None,
                        options: dict[str, dict] | None = None, metrics: Sequence[str] = METRICS,
                        metric_options: dict[str, dict] | None = None, rule: VerdictRule = VerdictRule(),
                        keep_maps: int = 4, max_steps: int | None = None, progress: bool = False,
                        reuse: bool = True) -> SanityResult:
    """The model-parameter randomization test (``mode`` cascading or independent) of ``methods`` on ``inputs``.

    ``reuse``: keep the trained model's activations below the lowest randomized block of each step and resume
    from them where the method allows (``sanity.cascade``; the maps are the same, the cost lower for layer
    methods above the cut). It holds one activation per step's cut point for all the images in memory.

    ``keep_maps`` first images keep their maps for the figure; ``max_steps`` stops after that many steps (the top
    blocks only: a quicker check, whose verdict can only look at those steps). See ``randomize`` for blocks,
    ``init`` and the running statistics, ``similarity`` for the metrics, this module's docstring for the verdict.
    """
    started = time.perf_counter()
    metrics = tuple(metrics)
    names, x, explainer = _prepare(model, inputs, methods, target, layer, batch_size, options, metrics, rule)
    block_list: list[Block] = randomization_blocks(model, blocks, granularity)
    plan = plan_steps(block_list, mode)
    if max_steps is not None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        plan = plan[:max_steps]
    steps = [s for s, _ in plan]
    step_blocks = [[m for i in ids for m in block_list[i].modules] for _, ids in plan]
    original, idx = explainer.original(model, x)
    cache = PrefixCache(model, x, block_list, plan) if reuse else None
    per_step: dict[str, list] = {"sims": [], "maps": []}
    models = randomized_models(model, mode, block_list, init=init, std=std, reset_running_stats=reset_running_stats,
                               seed=seed, seeding=seeding)
    refs = {m: Reference(original[m], metrics, metric_options) for m in names}  # ranks of the originals once
    for s, (name, work) in zip(range(len(plan)), models):
        maps = explainer(cache.wrap(work, plan[s][1]) if cache is not None else work, x)
        per_step["sims"].append({m: refs[m].compare(maps[m]) for m in names})
        if keep_maps:
            per_step["maps"].append({m: maps[m][:keep_maps].cpu() for m in names})
        if progress:
            print(f"step {s + 1}/{len(steps)} {name}: " + ", ".join(
                f"{m} {float(_nanmean(per_step['sims'][-1][m][rule.metric])):.3f}" for m in names
                if rule.metric in metrics), flush=True)
    config = {"init": init, "std": std if init == "normal" else None, "reset_running_stats": reset_running_stats,
              "reuse": dict(cache.counts) if cache is not None else None,
              "seed": seed, "seeding": seeding, "granularity": granularity if blocks is None else "blocks",
              "layer": explainer.used_layer,
              "metrics": list(metrics), "rule": {"metric": rule.metric, "threshold": rule.threshold,
                                                 "by_step": rule.by_step}}
    return _collect(mode, steps, step_blocks, names, original, per_step, x, idx, metrics, metric_options, rule,
                    keep_maps, config, started, seed)


def data_randomization(model: nn.Module, random_label_model: nn.Module, inputs: torch.Tensor,
                       methods: MethodLike | Sequence[MethodLike] = ("gradient",), *, target: Target = "top1",
                       layer: str | nn.Module | None = None, batch_size: int | None = None,
                       options: dict[str, dict] | None = None, metrics: Sequence[str] = METRICS,
                       metric_options: dict[str, dict] | None = None, rule: VerdictRule = VerdictRule(by_step=0),
                       keep_maps: int = 4, seed: int = 0) -> SanityResult:
    """The data randomization test: ``methods``' maps of ``random_label_model`` (same architecture, trained on
    permuted labels) against those of ``model`` on the same ``inputs``, for the classes ``model`` is asked about."""
    started = time.perf_counter()
    if type(model) is not type(random_label_model):
        raise TypeError(f"the data test compares one architecture: got {type(model).__name__} and "
                        f"{type(random_label_model).__name__}")
    metrics = tuple(metrics)
    names, x, explainer = _prepare(model, inputs, methods, target, layer, batch_size, options, metrics, rule)
    original, idx = explainer.original(model, x)
    maps = explainer(random_label_model, x)
    per_step = {"sims": [{m: compare(original[m], maps[m], metrics, metric_options) for m in names}],
                "maps": [{m: maps[m][:keep_maps].cpu() for m in names}] if keep_maps else []}
    config = {"seed": seed, "layer": explainer.used_layer, "metrics": list(metrics),
              "rule": {"metric": rule.metric, "threshold": rule.threshold, "by_step": rule.by_step}}
    return _collect("data", ["random labels"], [], names, original, per_step, x, idx, metrics, metric_options,
                    rule, keep_maps, config, started, seed)


def cascading_verdicts(model: nn.Module, inputs: torch.Tensor, methods: MethodLike | Sequence[MethodLike],
                       **kwargs: Any) -> dict[str, Verdict]:
    """Each method's verdict in the cascading randomization test (for a badge next to its maps)."""
    kwargs.setdefault("keep_maps", 0)
    return model_randomization(model, inputs, methods, mode="cascading", **kwargs).verdicts
