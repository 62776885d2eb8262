"""Gradient attributions on the input pixels: Gradient, Gradient x Input, Integrated Gradients,
SmoothGrad / VarGrad, Guided Backprop, Deconvnet and Guided Grad-CAM.

Every method returns (B, C, H, W) maps (reduce them for display with ``Explanation.map2d(rule)`` or
``Explanation.visualize("abs_grayscale" | "diverging")``). The backward pass only goes to the input
(parameters are frozen while it runs), the rows of expanded batches (interpolation steps, noisy copies) of
all images are chunked together by ``batch_size``, and the model is left exactly as it was.
"""
from __future__ import annotations

import contextlib
import warnings
from types import SimpleNamespace
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from interpretorch.attribution.cam import GRADIENT_RULES
from interpretorch.attribution.common import (as_baseline, check_inputs, chunks, clean_pass, resolve_layer,
                                               row_scores, rows_per_pass, seed_for, split_target)
from interpretorch.capture import capture
from interpretorch.explanation import Explanation, upsample
from interpretorch.targets import Target, check_finite, target_indices, target_scores

IG_METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
RELU_RULES = ("standard", "guided", "deconvnet")


# --- ReLU gradient rules (Guided Backprop, Deconvnet) ---------------------------------------------
#
# The rules are applied where the activation is computed, whatever computes it: a TorchFunctionMode sees every
# Python-level call of a ReLU-like function during the forward pass - nn.ReLU / nn.ReLU6 / nn.Hardtanh(0, t)
# modules (which call F.relu / F.hardtanh), and F.relu, torch.relu(_), Tensor.relu(_), F.relu6, F.hardtanh,
# torch.clamp / clip / clamp_min with a lower bound of 0 and F.threshold(x, 0, 0) written in ``forward`` - and
# routes it through an autograd function with the chosen backward rule. Activations that run below Python
# (TorchScript, C++ extensions, fused kernels) cannot be reached; a dispatch-level audit of the first forward pass
# counts them, and the caller is warned (or stopped when none at all was reached).

def _number(v: object) -> float | None:
    """``v`` as a float when it is a plain real number (not a bool or a tensor), else None."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def _relu_like_bounds(lo: object, hi: object) -> tuple[float, float | None] | None:
    """(0, upper) when clamping to [lo, hi] is a ReLU (lo = 0, no upper bound) or a ReLU-N (0 < upper)."""
    if _number(lo) != 0.0:
        return None
    if hi is None:
        return 0.0, None
    h = _number(hi)
    return (0.0, h) if h is not None and h > 0 else None


def _spec_table() -> dict:
    """func -> (parameter names, defaults, in-place flag or the name of the in-place argument, bounds rule)."""
    t = torch.Tensor
    relu = (lambda a: (0.0, None))
    clamp = (lambda a: _relu_like_bounds(a.get("min"), a.get("max")))
    specs = {
        F.relu: (("input", "inplace"), {"inplace": False}, "inplace", relu),
        torch.relu: (("input",), {}, False, relu), t.relu: (("input",), {}, False, relu),
        torch.relu_: (("input",), {}, True, relu), t.relu_: (("input",), {}, True, relu),
        F.relu6: (("input", "inplace"), {"inplace": False}, "inplace", lambda a: (0.0, 6.0)),
        F.hardtanh: (("input", "min_val", "max_val", "inplace"), {"min_val": -1.0, "max_val": 1.0, "inplace": False},
                     "inplace", lambda a: _relu_like_bounds(a["min_val"], a["max_val"])),
        F.hardtanh_: (("input", "min_val", "max_val"), {"min_val": -1.0, "max_val": 1.0}, True,
                      lambda a: _relu_like_bounds(a["min_val"], a["max_val"])),
        F.threshold: (("input", "threshold", "value", "inplace"), {"inplace": False}, "inplace",
                      lambda a: (0.0, None) if _number(a["threshold"]) == 0.0 == _number(a["value"]) else None),
        torch.threshold_: (("input", "threshold", "value"), {}, True,
                           lambda a: (0.0, None) if _number(a["threshold"]) == 0.0 == _number(a["value"]) else None),
    }
    for f, inplace in ((torch.clamp, False), (torch.clip, False), (t.clamp, False), (t.clip, False),
                       (torch.clamp_, True), (torch.clip_, True), (t.clamp_, True), (t.clip_, True)):
        specs[f] = (("input", "min", "max"), {"min": None, "max": None}, inplace, clamp)
    for f, inplace in ((torch.clamp_min, False), (t.clamp_min, False), (torch.clamp_min_, True), (t.clamp_min_, True)):
        specs[f] = (("input", "min"), {}, inplace, lambda a: _relu_like_bounds(a["min"], None))
    return specs


_SPECS = _spec_table()


def _bind(spec: tuple, args: tuple, kwargs: dict) -> dict | None:
    names, defaults, _, _ = spec
    if len(args) > len(names):
        return None
    bound = dict(defaults)
    bound.update(zip(names, args))
    for k, v in kwargs.items():
        key = "input" if k == "self" else k
        if key not in names:
            return None
        bound[key] = v
    return bound if all(n in bound for n in names) else None


class _ReluRule(torch.autograd.Function):
    """Clamp to [lo, hi] forward; send the gradient back by ``state.mode``: standard (the true derivative), guided
    (only positive gradients, through active units) or deconvnet (only positive gradients, whatever the forward
    activation). In place when ``inplace``."""

    @staticmethod
    def forward(ctx, x, lo, hi, inplace, state):  # noqa: D102
        if inplace:
            y = x.relu_() if hi is None else x.clamp_(lo, hi)
            ctx.mark_dirty(x)
        else:
            y = torch.relu(x) if hi is None else torch.clamp(x, lo, hi)
        # The output tells which units were active: y > lo iff x > lo, y < hi iff x < hi.
        ctx.save_for_backward(y)
        ctx.lo, ctx.hi, ctx.state = lo, hi, state
        return y

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (y,) = ctx.saved_tensors
        mode = ctx.state.mode
        if mode == "deconvnet":
            return g.clamp_min(0), None, None, None, None
        if mode == "guided":
            g = g.clamp_min(0)
        # The fused kernels of ReLU's and Hardtanh's own backward: g where lo < y (< hi), else 0.
        if ctx.hi is None:
            gx = torch.ops.aten.threshold_backward(g, y, ctx.lo)
        else:
            gx = torch.ops.aten.hardtanh_backward(g, y, ctx.lo, ctx.hi)
        return gx, None, None, None, None


class _RuleMode(TorchFunctionMode):
    """Route every ReLU-like call made from Python through ``_ReluRule``."""

    def __init__(self, state: SimpleNamespace) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        spec = _SPECS.get(func)
        if spec is None or self.state.paused:
            return func(*args, **kwargs)
        bound = _bind(spec, args, kwargs)
        bounds = None if bound is None else spec[3](bound)
        state = self.state
        state.inside += 1
        try:
            if bounds is None:
                return func(*args, **kwargs)
            state.reached += 1
            x = bound["input"]
            if not (isinstance(x, torch.Tensor) and x.is_floating_point() and torch.is_grad_enabled()
                    and x.requires_grad):
                return func(*args, **kwargs)
            inplace = spec[2] if isinstance(spec[2], bool) else bool(bound[spec[2]])
            return _ReluRule.apply(x, bounds[0], bounds[1], inplace, state)
        finally:
            state.inside -= 1


def _aten_relu_like(func, args: tuple, kwargs: dict) -> bool:
    """Whether an aten call is one of the ReLU-like operations the rule mode handles."""
    aten = torch.ops.aten
    op = getattr(func, "overloadpacket", None)
    a = list(args[1:])
    if op in (aten.relu, aten.relu_):
        return True
    if op in (aten.hardtanh, aten.hardtanh_):
        lo = a[0] if a else kwargs.get("min_val", -1.0)
        hi = a[1] if len(a) > 1 else kwargs.get("max_val", 1.0)
        return _relu_like_bounds(lo, hi) is not None
    if op in (aten.clamp, aten.clamp_, aten.clip, aten.clip_):
        lo = a[0] if a else kwargs.get("min")
        hi = a[1] if len(a) > 1 else kwargs.get("max")
        return _relu_like_bounds(lo, hi) is not None
    if op in (aten.clamp_min, aten.clamp_min_):
        return _relu_like_bounds(a[0] if a else kwargs.get("min"), None) is not None
    if op in (aten.threshold, aten.threshold_):
        return len(a) >= 2 and _number(a[0]) == 0.0 == _number(a[1])
    return False


class _ReachAudit(TorchDispatchMode):
    """Count ReLU-like aten operations that did not come through the rule mode (so were not reached)."""

    def __init__(self, state: SimpleNamespace) -> None:
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if not self.state.inside and not self.state.paused and _aten_relu_like(func, args, kwargs):
            self.state.unreached += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def relu_rule(model: nn.Module, mode: str = "guided") -> Iterator[SimpleNamespace]:
    """Make every ReLU-like activation computed in Python while ``model`` runs back-propagate by ``mode``
    (standard, guided, deconvnet).

    Covers nn.ReLU (in place or not), nn.ReLU6, nn.Hardtanh(0, t) and the functional forms called in
    ``forward`` (F.relu, torch.relu(_), Tensor.relu(_), F.relu6, F.hardtanh(x, 0, t), torch.clamp / clip /
    clamp_min with lower bound 0, F.threshold(x, 0, 0)). Yields a state whose ``mode`` may be changed between
    backward passes through one graph; wrap one forward pass in ``state.audit()`` to count the activations
    reached (``state.reached``) and those computed where no Python hook can reach them (``state.unreached``:
    TorchScript, C++ extensions), and code that is not the model (a target function) in ``state.pause()``.
    Nothing is left installed on exit, also when the body raises.
    """
    if mode not in RELU_RULES:
        raise ValueError(f"unknown ReLU rule {mode!r}; choose one of {RELU_RULES}")
    state = SimpleNamespace(mode=mode, reached=0, unreached=0, inside=0, paused=False)

    @contextlib.contextmanager
    def audit() -> Iterator[None]:
        state.reached = state.unreached = 0
        with _ReachAudit(state):
            yield

    @contextlib.contextmanager
    def pause() -> Iterator[None]:
        before, state.paused = state.paused, True
        try:
            yield
        finally:
            state.paused = before

    state.audit, state.pause = audit, pause
    with _RuleMode(state):
        yield state


def _check_reach(state: SimpleNamespace, method: str, model: nn.Module) -> None:
    """Raise when no ReLU-like activation was reached; warn when some ran out of reach."""
    if state.reached == 0:
        extra = (f" ({state.unreached} ReLU-like operations ran inside TorchScript or compiled code, which the "
                 "rule cannot reach)") if state.unreached else ""
        raise ValueError(f"{method} changes the backward pass of ReLU activations, but no ReLU-like activation "
                         f"(nn.ReLU, nn.ReLU6, F.relu, torch.clamp(x, 0, ...)) of {type(model).__name__} could be "
                         f"reached{extra}; use gradient or integrated_gradients instead")
    if state.unreached:
        warnings.warn(f"{method}: {state.unreached} of {state.reached + state.unreached} ReLU-like activations of "
                      f"{type(model).__name__} ran where the rule cannot reach them (TorchScript, C++ extensions or "
                      "compiled code); their gradients pass unchanged, so the map mixes the rule with plain "
                      "gradients. Run the model as plain Python modules for an exact result.", UserWarning,
                      stacklevel=4)


# --- plain input gradients -----------------------------------------------------------------------

def _input_grad(scores: torch.Tensor, rows: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    if not scores.requires_grad:
        raise RuntimeError("the target scores do not depend on the inputs")
    (g,) = torch.autograd.grad(scores.sum(), rows, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(rows) if g is None else g


def _grad_pass(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None,
               rule: str | None = None, method: str = "gradient"
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, dict]:
    """Gradients of the target scores w.r.t. the images, one forward and one backward per chunk (through the
    ReLU ``rule`` when given; the first forward is audited for activations the rule cannot reach)."""
    grads, idx_all, scores_all = [], [], []
    n = x.shape[0]
    info: dict = {}
    with relu_rule(model, rule) if rule else contextlib.nullcontext() as state, capture(model, []):
        for k, sl in enumerate(chunks(n, batch_size)):
            rows = x[sl].clone().requires_grad_(True)
            if state is not None and k == 0:
                with state.audit():
                    out = model(rows)
                _check_reach(state, method, model)
                info = {"relu_reached": state.reached, "relu_unreached": state.unreached}
            else:
                out = model(rows)
            check_finite(out)
            t = split_target(target, sl, n)
            with state.pause() if state is not None else contextlib.nullcontext():  # the target is not the model
                idx = target_indices(out, t)
                s = target_scores(out, t, idx)
            grads.append(_input_grad(s, rows))
            scores_all.append(s.detach())
            if idx is not None:
                idx_all.append(idx)
    return torch.cat(grads), (torch.cat(idx_all) if idx_all else None), torch.cat(scores_all), info


def gradient(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, batch_size: int | None = None,
             abs: bool = False) -> Explanation:  # noqa: A002 - the name users know from Saliency
    """Gradient (Simonyan et al. 2014): d score / d input. ``abs=True`` gives the saliency |gradient|;
    Simonyan's map is ``explanation.map2d("max_abs")``."""
    x = check_inputs(model, inputs)
    g, idx, scores, _ = _grad_pass(model, x, target, batch_size)
    return Explanation(maps=g.abs() if abs else g, method="gradient", target=idx, scores=scores)


def gradient_x_input(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                     batch_size: int | None = None) -> Explanation:
    """Gradient x Input (Shrikumar et al. 2016): the first-order Taylor contribution of each input value."""
    x = check_inputs(model, inputs)
    g, idx, scores, _ = _grad_pass(model, x, target, batch_size)
    return Explanation(maps=g * x, method="gradient_x_input", target=idx, scores=scores)


def guided_backprop(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                    batch_size: int | None = None) -> Explanation:
    """Guided Backpropagation (Springenberg et al. 2015): only positive gradients pass back through ReLUs
    whose input was positive.

    Applies to every ReLU-like activation computed in Python (nn.ReLU incl. in place, nn.ReLU6, F.relu,
    torch.clamp(x, 0, ...); see ``relu_rule``): raises when the model has none, warns when some run where
    no Python hook reaches them (TorchScript). ``extras`` counts ``relu_reached`` / ``relu_unreached``.
    """
    x = check_inputs(model, inputs)
    g, idx, scores, info = _grad_pass(model, x, target, batch_size, rule="guided", method="guided_backprop")
    return Explanation(maps=g, method="guided_backprop", target=idx, scores=scores, extras=info)


def deconvnet(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
              batch_size: int | None = None) -> Explanation:
    """Deconvnet (Zeiler & Fergus 2014): ReLUs pass back the positive part of the gradient, ignoring the forward
    activation. Same reach, errors and warnings as ``guided_backprop``."""
    x = check_inputs(model, inputs)
    g, idx, scores, info = _grad_pass(model, x, target, batch_size, rule="deconvnet", method="deconvnet")
    return Explanation(maps=g, method="deconvnet", target=idx, scores=scores, extras=info)


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


IG_BASELINES = ("zeros", "blur", "uniform")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur (B, C, H, W) images with a Gaussian of ``sigma`` pixels (separable, reflected borders)."""
    if sigma <= 0:
        return x.clone()
    h, w = x.shape[-2:]
    r = max(1, min(int(3 * sigma + 0.5), h - 1, w - 1))
    k = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    out = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


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
    x = check_inputs(model, inputs)
    batch_size = rows_per_pass(batch_size, x.device)
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
    with capture(model, []):
        for sl in chunks(steps * b, batch_size):  # rows are step-major: row r = (step r // b, image r % b)
            r = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = r // b, r % b
            rows = (base[i] + alphas_t[k].view(-1, 1, 1, 1) * diff[i]).requires_grad_(True)
            o = model(rows)
            check_finite(o, "outputs on interpolated inputs")
            g = _input_grad(row_scores(o, target, None if idx is None else idx[i]), rows)
            total.index_add_(0, i, g.to(acc) * weights_t[k].view(-1, 1, 1, 1))
    attr = (diff.to(acc) * total).to(x.dtype)
    change = (clean - base_scores).to(acc)
    delta = attr.to(acc).reshape(b, -1).sum(1) - change
    return Explanation(maps=attr, method="integrated_gradients", target=idx, scores=clean,
                       extras={"delta": delta.to(x.dtype), "delta_rel": (delta / change).to(x.dtype),
                               "baseline_scores": base_scores, "baseline": base, "steps": steps,
                               "integration": method, "forward_backward_passes": steps * b,
                               "forward_passes": 2 * b,
                               "baseline_kind": baseline if isinstance(baseline, str) else "given"})


# --- SmoothGrad / VarGrad ------------------------------------------------------------------------

NOISE_BASES: dict[str, Callable[..., Explanation]] = {
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
}


def unit_noise(samples: list[int], shape: tuple[int, ...], seed: int = 0, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """The standard normal noise of SmoothGrad / VarGrad sample numbers ``samples``: (len(samples), *shape).

    Sample ``s`` draws from its own stream of ``seed`` on the given device, so it is the same for every image,
    chunking and batch; the noise added to an image is this times its ``stdev``.
    """
    out = torch.empty((len(samples),) + tuple(shape), dtype=dtype, device=device)
    gen = torch.Generator(device=device)
    for j, sample in enumerate(samples):
        gen.manual_seed(seed_for(seed, sample))
        out[j] = torch.randn(shape, generator=gen, dtype=dtype, device=device)
    return out


def _noise_tunnel(model: nn.Module, inputs: torch.Tensor, target: Target, *, method: str, n_samples: int,
                  noise_level: float, stdev: float | torch.Tensor | None, base: str, seed: int,
                  batch_size: int | None, base_options: dict | None, need: tuple[str, ...] = ("mean", "square")
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, dict]:
    """Mean and mean square of ``base`` attributions over ``n_samples`` noisy copies of each image (each None
    when not in ``need``, so SmoothGrad does not pay for the squares)."""
    if base not in NOISE_BASES:
        raise ValueError(f"unknown base method {base!r} for {method}; choose one of {', '.join(NOISE_BASES)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    x = check_inputs(model, inputs)
    batch_size = rows_per_pass(batch_size, x.device)
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
    total = torch.zeros_like(x, dtype=torch.float64) if "mean" in need else None
    total_sq = torch.zeros_like(x, dtype=torch.float64) if "square" in need else None
    # Rows are sample-major (row r = sample r // b of image r % b); sample s draws the same unit noise
    # for every image and every chunking, so results do not depend on batch_size or batch composition.
    for sl in chunks(n_samples * b, batch_size):
        r = torch.arange(sl.start, sl.stop, device=x.device)
        s, i = r // b, r % b
        uniq, inv = torch.unique(s, return_inverse=True)
        noise = unit_noise(uniq.tolist(), tuple(x.shape[1:]), seed, dtype=x.dtype, device=x.device)[inv]
        rows = x[i] + sigma[i].view(-1, 1, 1, 1) * noise
        rows_target = target if idx is None else idx[i]
        a = base_fn(model, rows, rows_target, batch_size=batch_size, **opts).maps.double()
        if total is not None:
            total.index_add_(0, i, a)
        if total_sq is not None:
            total_sq.index_add_(0, i, a.square_())
    mean = None if total is None else total / n_samples
    mean_sq = None if total_sq is None else total_sq / n_samples
    scores = row_scores(out, target, idx)
    extras = {"stdev": sigma, "n_samples": n_samples, "base": base}
    return mean, mean_sq, {"idx": idx, "scores": scores, "extras": extras, "dtype": x.dtype}


def smoothgrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_samples: int = 50,
               noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, base: str = "gradient",
               squared: bool = False, seed: int = 0, batch_size: int | None = None,
               base_options: dict | None = None) -> Explanation:
    """SmoothGrad (Smilkov et al. 2017): the mean of ``base`` attributions over noisy copies of each image.

    Gaussian noise has standard deviation ``noise_level`` x (max - min) of each image (the paper's
    10-20%), or ``stdev`` in input units when given. ``squared=True`` averages squared attributions
    (SmoothGrad-Squared). ``base``: gradient, gradient_x_input, integrated_gradients, guided_backprop or
    deconvnet, with ``base_options`` passed on. ``seed`` fixes the noise.
    """
    mean, mean_sq, info = _noise_tunnel(model, inputs, target, method="smoothgrad", n_samples=n_samples,
                                        noise_level=noise_level, stdev=stdev, base=base, seed=seed,
                                        batch_size=batch_size, base_options=base_options,
                                        need=("square",) if squared else ("mean",))
    maps = (mean_sq if squared else mean).to(info["dtype"])
    return Explanation(maps=maps, method="smoothgrad", target=info["idx"], scores=info["scores"],
                       extras=info["extras"])


def vargrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_samples: int = 50,
            noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, base: str = "gradient",
            seed: int = 0, batch_size: int | None = None, base_options: dict | None = None) -> Explanation:
    """VarGrad (Adebayo et al. 2018): the variance of ``base`` attributions over noisy copies of each image.

    Same noise and options as ``smoothgrad``; the variance is the population one (divided by n_samples).
    """
    mean, mean_sq, info = _noise_tunnel(model, inputs, target, method="vargrad", n_samples=n_samples,
                                        noise_level=noise_level, stdev=stdev, base=base, seed=seed,
                                        batch_size=batch_size, base_options=base_options)
    var = (mean_sq - mean * mean).clamp_min(0).to(info["dtype"])
    return Explanation(maps=var, method="vargrad", target=info["idx"],
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
    for k, sl in enumerate(chunks(n, batch_size)):
        with relu_rule(model, "standard") as rule, capture(model, name) as rec:
            rows = x[sl].clone().requires_grad_(True)
            if k == 0:
                with rule.audit():
                    out = model(rows)
                _check_reach(rule, "guided_gradcam", model)
            else:
                out = model(rows)
            check_finite(out)
            t = split_target(target, sl, n)
            with rule.pause():
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
