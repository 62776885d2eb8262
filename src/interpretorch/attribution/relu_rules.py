"""ReLU gradient rules (Guided Backprop, Deconvnet) applied wherever a ReLU-like activation is computed in Python.

The rules are applied where the activation is computed, whatever computes it: a TorchFunctionMode sees every
Python-level call of a ReLU-like function during the forward pass - nn.ReLU / nn.ReLU6 / nn.Hardtanh(0, t)
modules (which call F.relu / F.hardtanh), and F.relu, torch.relu(_), Tensor.relu(_), F.relu6, F.hardtanh,
torch.clamp / clip / clamp_min with a lower bound of 0 and F.threshold(x, 0, 0) written in ``forward`` - and
routes it through an autograd function with the chosen backward rule. Activations that run below Python
(TorchScript, C++ extensions, fused kernels) cannot be reached; a dispatch-level audit of the first forward pass
counts them, and the caller is warned (or stopped when none at all was reached).
"""
from __future__ import annotations

import contextlib
import warnings
from types import SimpleNamespace
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

RELU_RULES = ("standard", "guided", "deconvnet")

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


def check_reach(state: SimpleNamespace, method: str, model: nn.Module) -> None:
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
