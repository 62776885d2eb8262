"""Integrated Gradients (Sundararajan et al. 2017) with its quadrature rules and baselines."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from interpretorch.attribution.common import as_baseline, clean_pass, method_inputs, row_scores
from interpretorch.attribution.gradient import input_grad
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.attribution.registry import register
from interpretorch.capture import capture
from interpretorch.core import seed_for
from interpretorch.core.batching import chunks
from interpretorch.core.targets import Target, check_finite, tensor_outputs
from interpretorch.explanation import Explanation
from interpretorch.imageops import gaussian_blur


IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def ig_quadrature(steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points ``alphas`` in [0, 1] and weights (summing to 1) approximating the path integral over alpha."""
    if method not in IG_METHODS:
        raise ValueError(f"unknown integration method {method!r}; choose one of {IG_METHODS}")
    if steps < 1 or (method == "riemann_trapezoid" and steps < 2):
        raise ValueError(f"steps must be >= {2 if method == 'riemann_trapezoid' else 1}, got {steps}")
    n = steps
    if method == "gausslegendre":
        pts, w = np.polynomial.legendre.leggauss(n)
        return (pts + 1) / 2, w / 2
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, n), w
    offset = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}[method]
    return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


IG_BASELINES = ("zeros", "blur", "uniform")


def ig_baseline(baseline: str | float | torch.Tensor, x: torch.Tensor, *, blur_sigma: float = 10.0,
                seed: int = 0) -> torch.Tensor:
    """The baseline images for ``x``: "zeros", "blur" (``x`` blurred by a Gaussian of ``blur_sigma`` pixels),
    "uniform" (noise uniform in [min, max] of each image, fixed by ``seed`` and the same pattern for every
    image), a number, or a tensor broadcastable to ``x``."""
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(x)
        if baseline == "blur":
            return gaussian_blur(x, blur_sigma)
        if baseline == "uniform":
            gen = torch.Generator().manual_seed(seed_for(seed, 0))
            u = torch.rand(x.shape[1:], generator=gen, dtype=torch.float64).to(device=x.device, dtype=x.dtype)
            flat = x.reshape(x.shape[0], -1)
            lo, hi = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
            return lo + (hi - lo) * u
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {IG_BASELINES}, a number or a tensor")
    return as_baseline(baseline, x)


def integrated_gradients(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                         baseline: str | float | torch.Tensor = "zeros", steps: int = 32,
                         method: str = "gausslegendre", batch_size: int | None = None, blur_sigma: float = 10.0,
                         seed: int = 0) -> Explanation:
    """Integrated Gradients (Sundararajan et al. 2017): (x - x') times the mean gradient on the straight path
    from the baseline x' to x.

    ``baseline``: "zeros", "blur" (Gaussian, ``blur_sigma`` pixels), "uniform" (noise in each image's range,
    seeded), a number or a tensor. ``method`` picks the quadrature: "gausslegendre" (Captum's default) or
    "riemann_left" / "riemann_right" / "riemann_middle" / "riemann_trapezoid"; the ``steps`` x B interpolated
    images of all images go through the model ``batch_size`` rows at a time. The completeness gap is reported:
    ``extras["delta"]`` = sum(attributions) - (f(x) - f(x')) per image and ``extras["delta_rel"]`` the same
    divided by f(x) - f(x'); raise ``steps`` or change the baseline while it is large.

    The gap depends more on the baseline than on the number of steps. On EfficientNet-Lite0 (chelsea,
    Gauss-Legendre) from a black image it is -0.7% at 32 steps and -0.08% at 200; from "zeros" (the mean
    colour of normalised inputs) the score rises by ~70% of f(x) - f(x') within the first 3% of the path, and
    the gap is +6% at 32 steps, -29% at 64 and -2.4% at 200 (no rule does better than 2% at 200 steps there).
    The default of 32 steps costs 32 forward + backward passes per image (1.5 s per 224 px image on a 2-core
    CPU, at the default of 8 rows per pass there); a black image as baseline is ``preprocess([black photo])`` of
    the model's preprocessing.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    alphas, weights = ig_quadrature(steps, method)
    base = ig_baseline(baseline, x, blur_sigma=blur_sigma, seed=seed)
    b = x.shape[0]
    diff = x - base
    idx, out = clean_pass(model, x, target, batch_size)
    clean = row_scores(out, target, idx)
    _, base_out = clean_pass(model, base, target, batch_size)
    base_scores = row_scores(base_out, target, idx)
    alphas_t = torch.as_tensor(alphas, dtype=x.dtype, device=x.device)
    # Accumulate in float64 where the device has it, so hundreds of steps add up without rounding drift.
    acc = torch.float64 if x.device.type != "mps" else x.dtype
    weights_t = torch.as_tensor(weights, dtype=acc, device=x.device)
    total = torch.zeros_like(x, dtype=acc)
    layout = row_layout(model, x)
    with capture(model, []):
        for sl in chunks(steps * b, batch_size):  # rows are step-major: row r = (step r // b, image r % b)
            r = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = r // b, r % b
            rows = in_layout(base[i] + alphas_t[k].view(-1, 1, 1, 1) * diff[i], layout).requires_grad_(True)
            o = model(rows.clone())  # a non-leaf copy: in-place first ops stay legal
            check_finite(o, "outputs on interpolated inputs")
            g = input_grad(row_scores(o, target, None if idx is None else idx[i]), rows)
            total.index_add_(0, i, g.to(acc) * weights_t[k].view(-1, 1, 1, 1))
    attr = (diff.to(acc) * total).to(x.dtype)
    change = (clean - base_scores).to(acc)
    delta = attr.to(acc).reshape(b, -1).sum(1) - change
    return Explanation(maps=attr, method="integrated_gradients", target=idx, scores=clean,
                       extras={"delta": delta.to(x.dtype), "delta_rel": (delta / change).to(x.dtype),
                               "baseline_scores": base_scores, "baseline": base, "steps": steps,
                               "integration": method, "forward_backward_passes": steps * b,
                               "forward_passes": 2 * b,
                               "baseline_kind": baseline if isinstance(baseline, str) else "given"},
                       outputs=tensor_outputs(out))


register("integrated_gradients", integrated_gradients, kind="pixel", aliases=("ig", "integratedgradients"))
