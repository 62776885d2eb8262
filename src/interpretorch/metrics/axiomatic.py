"""Axioms an attribution may satisfy (Quantus's axiomatic family), all images' perturbed rows batched.

* Completeness (Sundararajan et al. 2017): the attributions sum to ``f(x) - f(baseline)``. Quantus 0.6 reports
  whether the (max-normalised) sum *equals* the difference exactly, which float sums almost never do; here the
  figure is the gap ``|sum(a) - (f(x) - f(baseline))|`` relative to ``|f(x) - f(baseline)|`` of the raw
  attributions (lower is better), and ``completeness_terms`` gives both sides.
* Non-sensitivity (Nguyen & Martinez 2020): a pixel whose removal leaves the score unchanged (within ``eps``)
  should have (max-normalised |attribution|) below ``eps``, and only those; the figure is the number of pixels
  breaking this (lower is better). Pixels are visited in raster order, ``features_in_step`` at a time.
* Input invariance (Kindermans et al. 2019): a model whose first layer's bias absorbs a constant shift of the
  input computes the same function on the shifted input; a method should give it the same map. 1 or 0 per image.
  Quantus 0.6 sets each channel's bias to ``2 b - min(unique(conv(shift)))``: the smallest output value, which
  with zero padding can be a border value, not the interior's ``b + shift * sum(W)``; here the interior one
  (with padding no bias makes the border exact, so the test suits first layers without padding).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
from torch import nn

from interpretorch.core.targets import Target, image_target
from interpretorch.metrics._common import MapsLike, batched_rows, maps_2d, prepare
from interpretorch.metrics.perturbation import Baseline, feature_baseline

__all__ = ["completeness_terms", "completeness", "non_sensitivity", "shifted_model", "input_invariance"]


def completeness_terms(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                       baseline: Baseline = "black", softmax: bool = False, batch_size: int | None = None,
                       clean: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of each image's attributions, ``f(x) - f(baseline)``), both (B,) float64; a (B, C, H, W) map is
    summed over its channels too."""
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    a = maps.maps if hasattr(maps, "maps") else maps
    a = torch.as_tensor(a).detach()
    if a.shape[0] != x.shape[0]:
        raise ValueError(f"got {a.shape[0]} maps for {x.shape[0]} images")
    if not torch.isfinite(a).all():
        raise ValueError("maps contain NaN or infinite values")
    base = feature_baseline(x, baseline)
    f_base = scorer.forward_scores(base.contiguous(), cl.idx, softmax).double()
    return a.reshape(a.shape[0], -1).double().sum(1).to(x.device), cl.scores(scorer, softmax).double() - f_base


def completeness(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                 baseline: Baseline = "black", softmax: bool = False, batch_size: int | None = None,
                 clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image completeness gap ``|sum(a) - (f(x) - f(baseline))| / |f(x) - f(baseline)|``; lower is better
    (NaN where the difference is 0). One row per image."""
    total, diff = completeness_terms(model, inputs, maps, target, baseline=baseline, softmax=softmax,
                                     batch_size=batch_size, clean=clean)
    gap = (total - diff).abs() / diff.abs()
    return torch.where(diff != 0, gap, torch.full_like(gap, float("nan")))


def non_sensitivity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                    eps: float = 1e-5, features_in_step: int = 1, baseline: Baseline = "black",
                    softmax: bool = True, rule: str = "abs_sum", batch_size: int | None = None,
                    clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image count of pixels where "removing it (its step) leaves the score within ``eps``" and "its
    max-normalised |attribution| is below ``eps``" disagree (Nguyen & Martinez 2020); lower is better. One row per
    step and image, each step replacing only its own pixels."""
    if isinstance(features_in_step, bool) or not isinstance(features_in_step, int) or features_in_step < 1:
        raise ValueError(f"features_in_step must be a positive integer, got {features_in_step!r}")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b, _, h, w = x.shape
    a = maps_2d(maps, x, rule).double().abs().reshape(b, -1)
    top = a.amax(1, keepdim=True)
    a = a / torch.where(top > 0, top, torch.ones_like(top))
    n = h * w
    n_steps = math.ceil(n / features_in_step)
    step = (torch.arange(n, device=x.device) // features_in_step).reshape(h, w)
    base = feature_baseline(x, baseline)
    y = cl.scores(scorer, softmax).double()
    pert = torch.empty(b * n_steps, dtype=torch.float64, device=x.device)
    rows = torch.arange(b * n_steps, device=x.device)
    for sl in batched_rows(rows.numel(), scorer.batch_size):
        img, k = rows[sl] // n_steps, rows[sl] % n_steps
        mask = (step[None] == k[:, None, None])[:, None]
        xs = torch.where(mask, base[img], x[img])
        pert[sl] = scorer.forward_scores(xs, None if cl.idx is None else cl.idx[img], softmax).double()
    unchanged = ((pert.reshape(b, n_steps) - y[:, None]).abs() < eps)[:, step.reshape(-1)]
    return (unchanged ^ (a < eps)).sum(1).double()


def shifted_model(model: nn.Module, shift: float) -> nn.Module:
    """A copy of ``model`` that, given ``x + shift``, computes what ``model`` computes on ``x`` (Kindermans et al.
    2019): the first layer's bias absorbs the shift, ``b - shift * sum(W)`` per output channel. The first layer is
    the first module holding parameters; it must be a Conv2d or Linear. With zero padding the border outputs of a
    convolution still see the shift (as in the paper's construction)."""
    first = next((m for _, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))), None)
    if not isinstance(first, (nn.Conv2d, nn.Linear)):
        raise ValueError(f"input invariance shifts the first layer's bias: it must be a Conv2d or Linear, got "
                         f"{type(first).__name__ if first is not None else 'no parameterised module'}")
    clone = copy.deepcopy(model)
    layer = next(m for _, m in clone.named_modules() if any(True for _ in m.parameters(recurse=False)))
    with torch.no_grad():
        w = layer.weight
        delta = shift * w.reshape(w.shape[0], -1).sum(1)
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=w.dtype, device=w.device),
                                      requires_grad=w.requires_grad)
        layer.bias.sub_(delta.to(layer.bias.dtype))
    return clone


def input_invariance(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                     explain_fn: Callable[[nn.Module, torch.Tensor, Target], Any], shift: float = -1.0,
                     atol: float = 1e-4, batch_size: int | None = None,
                     clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image input invariance (Kindermans et al. 2019): 1.0 when ``explain_fn`` gives the same map (within
    ``atol`` everywhere) for ``x + shift`` on ``shifted_model(model, shift)``, whose outputs equal the model's,
    else 0.0; higher is better."""
    if not callable(explain_fn):
        raise TypeError("input invariance re-explains: it needs explain_fn(model, inputs, target) -> Explanation")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b = x.shape[0]
    other = shifted_model(model, shift)
    phi = (maps.maps if hasattr(maps, "maps") else torch.as_tensor(maps)).detach().to(x.device)
    out = []
    for sl in batched_rows(b, scorer.batch_size):
        t = image_target(scorer.target, cl.idx, sl)
        e = explain_fn(other, x[sl] + shift, t)
        out.append((e.maps if hasattr(e, "maps") else torch.as_tensor(e)).detach().to(x.device))
    alt = torch.cat(out)
    if alt.shape != phi.shape:
        raise ValueError(f"explain_fn returned maps of shape {tuple(alt.shape)}; expected {tuple(phi.shape)}")
    close = ((alt.double() - phi.double()).abs() <= atol).reshape(b, -1).all(1)
    return close.double()
