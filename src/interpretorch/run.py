"""``run``: explain a batch of images with several methods and return one result object that reports render.

Predictions come from the outputs the methods computed anyway (no extra forward pass); methods of one
shared pass run together and their time is counted once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.common import check_inputs, clean_pass, resolve_layer
from interpretorch.attribution.registry import available_methods, canonical, default_methods, explain, get_method
from interpretorch.explanation import Explanation
from interpretorch.targets import Target, check_target


@dataclass
class MethodRun:
    """One method's explanation in a run, with what produced it and what it cost."""

    name: str
    explanation: Explanation
    options: dict[str, Any]
    seconds: float
    shared_with: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The method's map kind: pixel, region or token."""
        return get_method(self.name).kind


@dataclass
class RunResult:
    """Everything a run produced: per image the top predictions, per method the explanation."""

    inputs: torch.Tensor
    names: list[str]
    predictions: list[list[dict[str, Any]]]
    methods: dict[str, MethodRun]
    target: Target
    layer: str | None
    class_names: list[str]
    model_name: str = "model"
    device: str = "cpu"
    display: torch.Tensor | None = None
    evaluation: dict[str, dict] | None = None
    evaluation_seconds: float | None = None
    failed: list[dict[str, str]] = field(default_factory=list)

    @property
    def explanations(self) -> dict[str, Explanation]:
        """{method: Explanation}."""
        return {m: r.explanation for m, r in self.methods.items()}

    def class_name(self, index: int | None) -> str | None:
        """The name of class ``index`` (None when unknown)."""
        if index is None or index >= len(self.class_names):
            return None
        return self.class_names[index]


def top_predictions(outputs: torch.Tensor, class_names: Sequence[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """Per image the ``k`` most probable classes: [{"index", "name", "prob"}, ...] ([] for non-class outputs)."""
    if outputs.dim() != 2:
        return [[] for _ in range(outputs.shape[0])]
    probs = outputs.detach().float().softmax(1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[{"index": int(i), "name": class_names[int(i)] if int(i) < len(class_names) else f"class {int(i)}",
              "prob": float(p)} for p, i in zip(pv, iv)] for pv, iv in zip(top.values, top.indices)]


def plan_steps(methods: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Group methods into steps: the members of a shared pass without options of their own run as one step."""
    groups: dict[str, list[str]] = {}
    steps: list[list[str]] = []
    for m in methods:
        g = get_method(m).group
        if g is not None and not options.get(m):
            if g not in groups:
                groups[g] = []
                steps.append(groups[g])
            groups[g].append(m)
        else:
            steps.append([m])
    return steps


def run(model: nn.Module, inputs: torch.Tensor, methods: str | Sequence[str] | None = None,
        target: Target = "top1", layer: str | nn.Module | None = None, *, batch_size: int | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None, names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None, topk: int = 5, evaluate: bool = False,
        metrics: str | Sequence[str] | None = None, display: torch.Tensor | None = None, model_name: str = "model",
        progress: Callable[[list[str]], None] | None = None) -> RunResult:
    """Explain ``inputs`` with each method (default: ``default_methods()``; "all" for every one) and, with
    ``evaluate``, score the maps; returns a :class:`RunResult`.

    ``options`` maps a method to its own keyword arguments; ``class_names`` default to ImageNet's when the
    model has 1000 outputs; ``progress(step)`` is called after each step (a list of method names).
    """
    x = check_inputs(model, inputs)
    target = check_target(target, x.shape[0])
    if methods is None:
        names_ = default_methods()
    elif methods == "all":
        names_ = available_methods()
    else:
        names_ = list(dict.fromkeys(canonical(m) for m in ([methods] if isinstance(methods, str) else methods)))
    if not names_:
        raise ValueError("no method given; name at least one (interpretorch methods lists them)")
    opts = {canonical(k): dict(v) for k, v in (options or {}).items()}
    for m, o in opts.items():
        if m not in names_:
            raise ValueError(f"options given for {m}, which is not among the methods run ({', '.join(names_)})")
        get_method(m).check_options(o)
    layered = any(get_method(m).needs_layer for m in names_)
    if layer is not None and not layered:
        raise ValueError(f"layer= is for the layer methods; {', '.join(names_)} explain the input pixels")
    layer_name = resolve_layer(model, layer, x) if layered else None
    results: dict[str, MethodRun] = {}
    for step in plan_steps(names_, opts):
        t0 = time.perf_counter()
        needs = get_method(step[0]).needs_layer
        got = explain(model, x, step, target, layer_name if needs else None, batch_size=batch_size,
                      options={m: opts[m] for m in step if m in opts})
        seconds = time.perf_counter() - t0
        for m in step:
            results[m] = MethodRun(m, got[m], opts.get(m, {}), seconds, [o for o in step if o != m])
        if progress is not None:
            progress(step)
    outputs = next((r.explanation.outputs for r in results.values() if r.explanation.outputs is not None), None)
    if outputs is None:
        _, outputs = clean_pass(model, x, target, batch_size)
    if class_names is None or not len(class_names):
        class_names = _guess_class_names(outputs)
    result = RunResult(inputs=x, names=list(names) if names is not None else [f"image {i}" for i in range(len(x))],
                       predictions=top_predictions(outputs, class_names, topk), methods=results, target=target,
                       layer=layer_name, class_names=list(class_names), model_name=model_name,
                       device=str(x.device), display=display)
    if evaluate:
        from interpretorch.metrics import evaluate as evaluate_maps

        t0 = time.perf_counter()
        result.evaluation = evaluate_maps(model, x, result.explanations, target=target, batch_size=batch_size,
                                          metrics=metrics)
        result.evaluation_seconds = time.perf_counter() - t0
    return result


def _guess_class_names(outputs: torch.Tensor) -> list[str]:
    from interpretorch.models import imagenet_classes

    return imagenet_classes() if outputs.dim() == 2 and outputs.shape[1] == 1000 else []
