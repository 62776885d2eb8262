"""Gradient attributions on the input pixels: Gradient, Gradient x Input, Integrated Gradients,
SmoothGrad / VarGrad, Guided Backprop, Deconvnet and Guided Grad-CAM.

Every method returns (B, C, H, W) maps. The backward pass only goes to the input (parameters are
frozen while it runs), rows of expanded batches (interpolation steps, noisy copies) are chunked by
``batch_size``, and the model is left exactly as it was.
"""
from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.cam import GRADIENT_RULES
from interpretorch.attribution.common import (as_baseline, check_inputs, chunks, clean_pass, resolve_layer,
                                               row_scores, seed_for, split_target)
from interpretorch.capture import capture
from interpretorch.explanation import Explanation, upsample
from interpretorch.targets import Target, check_finite, target_indices, target_scores

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
RELU_RULES = ("standard", "guided", "deconvnet")


# --- ReLU gradient rules (Guided Backprop, Deconvnet) ---------------------------------------------

def _relu_bounds(m: nn.Module) -> tuple[float, float | None] | None:
    """(lower, upper) clamp of a ReLU-like module (ReLU, ReLU6, Hardtanh(0, t)), or None for other modules."""
    if isinstance(m, nn.ReLU):
        return 0.0, None
    if isinstance(m, nn.Hardtanh) and m.min_val == 0:
        return 0.0, float(m.max_val)
    return None


class _ReluRule(torch.autograd.Function):
    """Pass a ReLU-like module's output forward; send the gradient back to its input by ``state.mode``:
    standard (the true derivative), guided (only positive gradients, through active units) or
    deconvnet (only positive gradients, whatever the forward activation)."""

    @staticmethod
    def forward(ctx, x, y, lo, hi, state):  # noqa: D102
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi, ctx.state = lo, hi, state
        return y.clone()

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (x,) = ctx.saved_tensors
        mode = ctx.state.mode
        if mode == "deconvnet":
            return g.clamp_min(0), None, None, None, None
        if mode == "guided":
            g = g.clamp_min(0)
        # The fused kernels of ReLU's and Hardtanh's own backward: g where lo < x (< hi), else 0.
        if ctx.hi is None:
            gx = torch.ops.aten.threshold_backward(g, x, ctx.lo)
        else:
            gx = torch.ops.aten.hardtanh_backward(g, x, ctx.lo, ctx.hi)
        return gx, None, None, None, None


@contextlib.contextmanager
def relu_rule(model: nn.Module, mode: str = "guided") -> Iterator[SimpleNamespace]:
    """Make every ReLU / ReLU6 module of ``model`` back-propagate by ``mode`` (standard, guided, deconvnet).

    Yields a state whose ``mode`` may be changed between backward passes through one graph. Works with
    in-place activations; activations called as functions (``F.relu``) inside ``forward`` cannot be
    reached and keep their usual gradient. Hooks are removed on exit, also when the body raises.
    """
    if mode not in RELU_RULES:
        raise ValueError(f"unknown ReLU rule {mode!r}; choose one of {RELU_RULES}")
    mods = [m for m in model.modules() if _relu_bounds(m) is not None]
    if not mods:
        raise ValueError("Guided Backprop and Deconvnet change the backward pass of ReLU modules, but this model "
                         "has no nn.ReLU / nn.ReLU6 module (activations called as F.relu cannot be hooked); "
                         "use gradient or integrated_gradients instead")
    state = SimpleNamespace(mode=mode)
    pending: dict[int, list[torch.Tensor]] = {}

    def pre(m: nn.Module, args: tuple) -> tuple | None:
        x = args[0]
        pending.setdefault(id(m), []).append(x)
        if getattr(m, "inplace", False):  # keep the pre-activation intact for the backward rule
            return (x.clone(),) + tuple(args[1:])
        return None

    def post(m: nn.Module, _args: tuple, out: torch.Tensor) -> torch.Tensor:
        x = pending[id(m)].pop()
        lo, hi = _relu_bounds(m)
        return _ReluRule.apply(x, out.detach(), lo, hi, state)

    handles = []
    try:
        for m in mods:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        yield state
    finally:
        for h in handles:
            h.remove()


# --- plain input gradients -----------------------------------------------------------------------

def _input_grad(scores: torch.Tensor, rows: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    if not scores.requires_grad:
        raise RuntimeError("the target scores do not depend on the inputs")
    (g,) = torch.autograd.grad(scores.sum(), rows, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(rows) if g is None else g


def _grad_pass(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None,
               rule: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Gradients of the target scores w.r.t. the images, one forward and one backward per chunk."""
    grads, idx_all, scores_all = [], [], []
    n = x.shape[0]
    with relu_rule(model, rule) if rule else contextlib.nullcontext(), capture(model, []):
        for sl in chunks(n, batch_size):
            rows = x[sl].clone().requires_grad_(True)
            out = model(rows)
            check_finite(out)
            t = split_target(target, sl, n)
            idx = target_indices(out, t)
            s = target_scores(out, t, idx)
            grads.append(_input_grad(s, rows))
            scores_all.append(s.detach())
            if idx is not None:
                idx_all.append(idx)
    return torch.cat(grads), (torch.cat(idx_all) if idx_all else None), torch.cat(scores_all)


def gradient(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, batch_size: int | None = None,
             abs: bool = False) -> Explanation:  # noqa: A002 - the name users know from Saliency
    """Gradient (Simonyan et al. 2014): d score / d input. ``abs=True`` gives the saliency |gradient|;
    Simonyan's map is ``explanation.map2d("max_abs")``."""
    x = check_inputs(model, inputs)
    g, idx, scores = _grad_pass(model, x, target, batch_size)
    return Explanation(maps=g.abs() if abs else g, method="gradient", target=idx, scores=scores)


def gradient_x_input(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                     batch_size: int | None = None) -> Explanation:
    """Gradient x Input (Shrikumar et al. 2016): the first-order Taylor contribution of each input value."""
    x = check_inputs(model, inputs)
    g, idx, scores = _grad_pass(model, x, target, batch_size)
    return Explanation(maps=g * x, method="gradient_x_input", target=idx, scores=scores)


def guided_backprop(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                    batch_size: int | None = None) -> Explanation:
    """Guided Backpropagation (Springenberg et al. 2015): only positive gradients pass back through ReLUs
    whose input was positive. Applies to nn.ReLU and nn.ReLU6 modules."""
    x = check_inputs(model, inputs)
    g, idx, scores = _grad_pass(model, x, target, batch_size, rule="guided")
    return Explanation(maps=g, method="guided_backprop", target=idx, scores=scores)


def deconvnet(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
              batch_size: int | None = None) -> Explanation:
    """Deconvnet (Zeiler & Fergus 2014): ReLUs pass back the positive part of the gradient, ignoring the forward
    activation. Applies to nn.ReLU and nn.ReLU6 modules."""
    x = check_inputs(model, inputs)
    g, idx, scores = _grad_pass(model, x, target, batch_size, rule="deconvnet")
    return Explanation(maps=g, method="deconvnet", target=idx, scores=scores)


# --- Integrated Gradients ------------------------------------------------------------------------

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


def integrated_gradients(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                         baseline: float | torch.Tensor = 0.0, steps: int = 50, method: str = "gausslegendre",
                         batch_size: int = 32) -> Explanation:
    """Integrated Gradients (Sundararajan et al. 2017): (x - x') times the mean gradient on the straight path
    from the baseline x' to x.

    ``method`` picks the quadrature (``gausslegendre`` like Captum's default, or a Riemann rule);
    the ``steps`` x B interpolated images go through the model ``batch_size`` rows at a time.
    ``extras["delta"]`` holds the completeness error sum(attributions) - (f(x) - f(x')) per image.
    """
    x = check_inputs(model, inputs)
    base = as_baseline(baseline, x)
    alphas, weights = ig_quadrature(steps, method)
    alphas_t = torch.as_tensor(alphas, dtype=x.dtype, device=x.device)
    weights_t = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    idx, out = clean_pass(model, x, target, batch_size)
    clean = row_scores(out, target, idx)
    b = x.shape[0]
    diff = x - base
    total = torch.zeros_like(x)
    with capture(model, []):
        for sl in chunks(steps * b, batch_size):  # rows are step-major: row r = (step r // b, image r % b)
            r = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = r // b, r % b
            rows = (base[i] + alphas_t[k].view(-1, 1, 1, 1) * diff[i]).requires_grad_(True)
            o = model(rows)
            check_finite(o, "outputs on interpolated inputs")
            g = _input_grad(row_scores(o, target, None if idx is None else idx[i]), rows)
            total.index_add_(0, i, g * weights_t[k].view(-1, 1, 1, 1))
    attr = diff * total
    _, base_out = clean_pass(model, base, target, batch_size)
    base_scores = row_scores(base_out, target, idx)
    delta = attr.reshape(b, -1).sum(1) - (clean - base_scores)
    return Explanation(maps=attr, method="integrated_gradients", target=idx, scores=clean,
                       extras={"delta": delta, "steps": steps, "integration": method})


# --- SmoothGrad / VarGrad ------------------------------------------------------------------------

NOISE_BASES: dict[str, Callable[..., Explanation]] = {
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
}


def _noise_tunnel(model: nn.Module, inputs: torch.Tensor, target: Target, *, method: str, n_samples: int,
                  noise_level: float, stdev: float | torch.Tensor | None, base: str, seed: int,
                  batch_size: int, base_options: dict | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Mean and mean square of ``base`` attributions over ``n_samples`` noisy copies of each image."""
    if base not in NOISE_BASES:
        raise ValueError(f"unknown base method {base!r} for {method}; choose one of {', '.join(NOISE_BASES)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    x = check_inputs(model, inputs)
    b = x.shape[0]
    if stdev is None:
        if noise_level < 0:
            raise ValueError(f"noise_level must be >= 0, got {noise_level}")
        flat = x.reshape(b, -1)
        sigma = noise_level * (flat.amax(1) - flat.amin(1))
    else:
        sigma = torch.as_tensor(stdev, dtype=x.dtype, device=x.device).reshape(-1).expand(b).clone()
    idx, out = clean_pass(model, x, target, batch_size)
    base_fn = NOISE_BASES[base]
    opts = dict(base_options or {})
    total = torch.zeros_like(x, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    # Rows are sample-major (row r = sample r // b of image r % b); sample s draws the same unit noise
    # for every image and every chunking, so results do not depend on batch_size or batch composition.
    for sl in chunks(n_samples * b, batch_size):
        r = torch.arange(sl.start, sl.stop, device=x.device)
        s, i = r // b, r % b
        noise = torch.empty((sl.stop - sl.start,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        gen = torch.Generator(device=x.device)
        for j, sample in enumerate(s.tolist()):
            if j == 0 or sample != s[j - 1]:
                gen.manual_seed(seed_for(seed, sample))
                unit = torch.randn(x.shape[1:], generator=gen, dtype=x.dtype, device=x.device)
            noise[j] = unit
        rows = x[i] + sigma[i].view(-1, 1, 1, 1) * noise
        rows_target = target if idx is None else idx[i]
        a = base_fn(model, rows, rows_target, batch_size=batch_size, **opts).maps.double()
        total.index_add_(0, i, a)
        total_sq.index_add_(0, i, a * a)
    mean, mean_sq = total / n_samples, total_sq / n_samples
    scores = row_scores(out, target, idx)
    extras = {"stdev": sigma, "n_samples": n_samples, "base": base}
    return mean.to(x.dtype), mean_sq.to(x.dtype), {"idx": idx, "scores": scores, "extras": extras}


def smoothgrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_samples: int = 50,
               noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, base: str = "gradient",
               squared: bool = False, seed: int = 0, batch_size: int = 32,
               base_options: dict | None = None) -> Explanation:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``base`` attributions over noisy copies of each image.

    Gaussian noise has standard deviation ``noise_level`` x (max - min) of each image (the paper's
    10-20%), or ``stdev`` in input units when given. ``squared=True`` averages squared attributions
    (SmoothGrad-Squared). ``base``: gradient, gradient_x_input, integrated_gradients, guided_backprop or
    deconvnet, with ``base_options`` passed on. ``seed`` fixes the noise.
    """
    mean, mean_sq, info = _noise_tunnel(model, inputs, target, method="smoothgrad", n_samples=n_samples,
                                        noise_level=noise_level, stdev=stdev, base=base, seed=seed,
                                        batch_size=batch_size, base_options=base_options)
    return Explanation(maps=mean_sq if squared else mean, method="smoothgrad", target=info["idx"],
                       scores=info["scores"], extras=info["extras"])


def vargrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_samples: int = 50,
            noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, base: str = "gradient",
            seed: int = 0, batch_size: int = 32, base_options: dict | None = None) -> Explanation:
    """VarGrad (Adebayo et al. 2018): the variance of ``base`` attributions over noisy copies of each image.

    Same noise and options as ``smoothgrad``; the variance is the population one (divided by n_samples).
    """
    mean, mean_sq, info = _noise_tunnel(model, inputs, target, method="vargrad", n_samples=n_samples,
                                        noise_level=noise_level, stdev=stdev, base=base, seed=seed,
                                        batch_size=batch_size, base_options=base_options)
    return Explanation(maps=(mean_sq - mean * mean).clamp_min(0), method="vargrad", target=info["idx"],
                       scores=info["scores"], extras=info["extras"])


# --- Guided Grad-CAM -----------------------------------------------------------------------------

def guided_gradcam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                   layer: str | nn.Module | None = None, *, batch_size: int | None = None,
                   interpolate: str = "bilinear") -> Explanation:
    """Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop times the (ReLU'd) Grad-CAM map upsampled to the
    input.

    Both come from one forward pass per chunk: a first backward with the true ReLU derivatives gives
    Grad-CAM's gradients at ``layer``, a second through the same graph with the guided rule gives the
    input gradients. ``interpolate``: "bilinear" (as the CAMs here) or "nearest" (Captum's default).
    ``raw`` holds the layer-resolution Grad-CAM.
    """
    if interpolate not in ("bilinear", "nearest"):
        raise ValueError(f"interpolate must be 'bilinear' or 'nearest', got {interpolate!r}")
    x = check_inputs(model, inputs)
    name = resolve_layer(model, layer, x)
    grads, cams, idx_all, scores_all = [], [], [], []
    n = x.shape[0]
    for sl in chunks(n, batch_size):
        # The rule hooks go on before capture's hook, so a captured ReLU layer records the rule's output.
        with relu_rule(model, "standard") as rule, capture(model, name) as rec:
            rows = x[sl].clone().requires_grad_(True)
            out = model(rows)
            check_finite(out)
            t = split_target(target, sl, n)
            idx = target_indices(out, t)
            s = target_scores(out, t, idx)
            a = rec[name]
            if a.dim() != 4:
                raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; Grad-CAM needs a (B, C, H, W) output")
            ga = rec.gradients(s, retain_graph=True)[name]
            rule.mode = "guided"
            grads.append(_input_grad(s, rows))
        cams.append(F.relu(GRADIENT_RULES["gradcam"](a.detach(), ga)))
        scores_all.append(s.detach())
        if idx is not None:
            idx_all.append(idx)
    raw = torch.cat(cams)
    size = tuple(x.shape[-2:])
    up = upsample(raw, size) if interpolate == "bilinear" else F.interpolate(raw[:, None], size=size)[:, 0]
    return Explanation(maps=torch.cat(grads) * up[:, None], method="guided_gradcam",
                       target=torch.cat(idx_all) if idx_all else None, layer=name, raw=raw,
                       scores=torch.cat(scores_all))
