"""How many model rows each built-in method needs: what run-time estimates (``interpretorch explain``'s line
before a run) and progress totals read.

A row is what :mod:`interpretorch.core.batching` counts: one image, interpolation step, noisy copy, occluded
window, mask or masked input through the model (DeepLIFT: one image / reference pair). Each formula counts the
rows of the method's chunked loops, which is also what :func:`interpretorch.core.progress.track` counts. Where
the number depends on the data it is an upper bound: Score-CAM, Ablation-CAM, Group-CAM and SS-CAM skip channels
that are constant on an image; SLIC features are taken as ``n_segments`` per image.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.common import resolve_layer
from interpretorch.attribution.registry import Geometry, describe_rows, get_method
from interpretorch.capture import capture
from interpretorch.core import check_inputs, rows_per_pass

__all__ = ["occlusion_windows", "feature_count", "MethodCost", "geometry_of", "time_per_row", "estimate"]


@dataclass(frozen=True)
class MethodCost:
    """The expected cost of one method on a batch: model rows (None: unknown) and seconds."""

    method: str
    rows: int | None
    seconds: float | None
    backward: bool


def geometry_of(model: nn.Module, x: torch.Tensor, layer: Any = None) -> Geometry:
    """Images, their size and the channels of ``layer`` (the default CAM layer when None) for ``x``."""
    name = resolve_layer(model, layer, x[:1])
    with capture(model, name, grad=False) as rec:
        model(x[:1])
    act = rec[name]
    return Geometry(int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]), int(act.shape[1]) if act.dim() > 1 else 1)


def time_per_row(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> tuple[float, float]:
    """Seconds per row of one forward pass and of one forward + backward, timed on one batch of ``x``'s rows."""
    x = check_inputs(model, x)
    n = rows_per_pass(batch_size, x.device)
    rows = x[:1].expand(n, *x.shape[1:]).clone()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    params = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            model(rows[:1])  # warm-up
            sync()
            t0 = time.perf_counter()
            model(rows)
            sync()
            forward = (time.perf_counter() - t0) / n
        leaf = rows.clone().requires_grad_(True)
        t0 = time.perf_counter()
        out = model(leaf.clone())
        out.reshape(n, -1)[:, 0].sum().backward()
        sync()
        both = (time.perf_counter() - t0) / n
    finally:
        for p, r in zip(model.parameters(), params):
            p.requires_grad_(r)
    return forward, max(both, forward)


def estimate(model: nn.Module, x: torch.Tensor, methods: Sequence[str], options: Mapping[str, Mapping] | None = None,
             layer: Any = None, batch_size: int | None = None) -> list[MethodCost]:
    """Expected model rows and seconds of each method on ``x`` (one timed forward / backward on the model)."""
    options = options or {}
    specs = [get_method(m) for m in methods]
    x = check_inputs(model, x)
    g = geometry_of(model, x, layer) if any(s.needs_layer for s in specs) else Geometry(*x.shape[:1], *x.shape[-2:])
    forward, both = time_per_row(model, x, batch_size)
    costs = []
    for s in specs:
        rows = s.estimate_rows(options.get(s.name, {}), g)
        secs = None if rows is None else rows * (both if s.backward else forward)
        costs.append(MethodCost(s.name, rows, secs, s.backward))
    return costs


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _starts(length: int, window: int, stride: int) -> int:
    """Number of window origins every ``stride`` cells, the last one moved inside."""
    if window >= length:
        return 1
    return math.ceil((length - window) / stride) + 1


def occlusion_windows(options: Mapping[str, Any], g: Geometry) -> int:
    """Occluded windows per image for Occlusion's ``window`` / ``stride`` options on ``g``'s images."""
    window = options.get("window") or max(1, min(g.height, g.width) // 7)
    kh, kw = _pair(window)
    stride = options.get("stride") or (max(1, kh // 2), max(1, kw // 2))
    sh, sw = _pair(stride)
    return _starts(g.height, kh, sh) * _starts(g.width, kw, sw)


def feature_count(options: Mapping[str, Any], g: Geometry) -> int:
    """Features per image of the feature methods: grid cells, or ``n_segments`` SLIC superpixels."""
    if options.get("features", "slic") == "grid":
        cell = options.get("cell") or max(1, min(g.height, g.width) // 8)
        ch, cw = _pair(cell)
        return math.ceil(g.height / ch) * math.ceil(g.width / cw)
    return int(options.get("n_segments", 50))


def _sess_tiles(options: Mapping[str, Any], g: Geometry) -> int:
    window = options.get("window") or min(g.height, g.width)
    step = options.get("step") or window
    scales = options.get("scales")
    if scales is None:
        inc = int(round(window * options.get("scale_step_ratio", 2 / 7)))
        scales = [window + inc * i for i in range(int(options.get("num_scales", 3)))]
    short = min(g.height, g.width)
    n = 0
    for s in scales:
        h, w = (s, round(g.width * s / short)) if g.height <= g.width else (round(g.height * s / short), s)
        n += _count_windows(h, step, window) * _count_windows(w, step, window)
    return n


def _count_windows(length: int, step: int, window: int) -> int:
    n = 0
    for s in range(0, length, step):
        n += 1
        if s + window >= length:
            break
    return n


def _steps(o: Mapping[str, Any]) -> int:
    return int(o.get("steps", 32))


FORMULAS = {
    # name: (rows(options, geometry), runs a backward pass)
    "scorecam": (lambda o, g: g.n_images * (1 + g.channels), False),
    "ablationcam": (lambda o, g: g.n_images * (1 + g.channels), False),
    "groupcam": (lambda o, g: g.n_images * (2 + min(int(o["groups"]), g.channels)), False),
    "sscam": (lambda o, g: g.n_images * (1 + g.channels * int(o["n_samples"])), False),
    "integrated_gradients": (lambda o, g: g.n_images * (_steps(o) + 2), True),
    "smoothgrad": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "vargrad": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "smoothgradcampp": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "occlusion": (lambda o, g: g.n_images * (1 + occlusion_windows(o, g)), False),
    "rise": (lambda o, g: g.n_images * (1 + int(o["n_masks"] if o.get("masks") is None else len(o["masks"]))),
             False),
    "sess": (lambda o, g: g.n_images * (1 + _sess_tiles(o, g)
                                        + _sess_tiles(o, g) - int(_sess_tiles(o, g) * float(o["pre_filter_ratio"]))),
             True),
    "extremal_perturbation": (lambda o, g: g.n_images * (len(o["areas"]) * (int(o["iterations"]) + 2) + 1), True),
    "meaningful_perturbation": (lambda o, g: g.n_images * (int(o["iterations"]) + 2), True),
    "deeplift_shap": (lambda o, g: g.n_images * (2 if o.get("baselines") is None else len(o["baselines"])), True),
    "gradient_shap": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "shapley_sampling": (lambda o, g: g.n_images * (2 + int(o["n_samples"]) * feature_count(o, g)), False),
    "feature_ablation": (lambda o, g: g.n_images * (1 + feature_count(o, g)), False),
    "feature_permutation": (lambda o, g: g.n_images * (1 + feature_count(o, g)), False),
    "lime": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), False),
    "kernel_shap": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), False),
    "layer_conductance": (lambda o, g: g.n_images * (_steps(o) + 2), True),
    "internal_influence": (lambda o, g: g.n_images * (_steps(o) + 1), True),
    "neuron_gradient": (lambda o, g: g.n_images * 3, True),
    "neuron_integrated_gradients": (lambda o, g: g.n_images * (_steps(o) + 3), True),
    "neuron_conductance": (lambda o, g: g.n_images * (_steps(o) + 2), True),
}

for _name, (_rows, _backward) in FORMULAS.items():
    describe_rows(_name, _rows, backward=_backward)
