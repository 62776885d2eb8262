"""Axioms an attribution may satisfy (Quantus's axiomatic family), all images' perturbed rows batched.

* Completeness (Sundararajan et al. 2017): the attributions sum to ``f(x) - f(baseline)``. Quantus 0.6 reports
  whether the (max-normalised) sum *equals* the difference exactly, which float sums almost never do; here the
  figure is the gap ``|sum(a) - (f(x) - f(baseline))|`` relative to ``|f(x) - f(baseline)|`` of the raw
  attributions (lower is better), and ``completeness_terms`` gives both sides.
* Non-sensitivity (Nguyen & Martinez 2020): a pixel whose removal leaves the score unchanged (within ``eps``)
  should have (max-normalised |attribution|) below ``eps``, and only those; the figure is the number of pixels
  breaking this (lower is better). Pixels are visited in raster order, ``features_in_step`` at a time.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from interpretorch.core.targets import Target
from interpretorch.metrics._common import MapsLike, batched_rows, maps_2d, prepare
from interpretorch.metrics.perturbation import Baseline, feature_baseline

__all__ = ["completeness_terms", "completeness", "non_sensitivity"]


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
