"""DeepLIFT with the rescale and RevealCancel rules (Shrikumar et al. 2017) and DeepLiftShap (Lundberg & Lee 2017).

The references of a chunk of (image, reference) pairs go through the model first, without gradients (a reference
shared by all images, like the zeros, is one row), and the inputs of their nonlinearities are kept in call order;
then the images go through with gradients, and every elementwise nonlinearity computed from Python (ReLU, ReLU6,
Hardtanh / clamp, ELU, LeakyReLU, Sigmoid, Tanh, Softplus, SiLU, GELU, Hardswish, ...) back-propagates the
multiplier ``delta out / delta in`` of its pair instead of its derivative (its derivative where ``|delta in| <
eps``), and max pooling passes the difference of its outputs to the position of the image's or the reference's
maximum, whichever is larger (Captum's rule). Linear operations (convolutions, eval-mode BatchNorm, pooling by
averages, residual sums) keep their gradient, which is their multiplier. Attributions are ``(x - x') * multiplier``
and sum to ``f(x) - f(x')`` (``extras["delta"]`` reports the gap). An image's and its reference's multipliers are
equal at every layer, so only the image rows are back-propagated (Captum back-propagates both). The rules are
applied where the operations are computed (a TorchFunctionMode, like the ReLU rules of Guided Backprop), so the
model is never changed and no module hook is installed. A model whose sequence of nonlinearities differs between
the two passes counts the unmatched ones in ``extras["unpaired_operations"]`` (they keep their gradient).

Captum's ``DeepLift`` differs in two places, both shown by tests: it only knows the module types ReLU, ELU,
LeakyReLU, Sigmoid, Tanh, Softplus, MaxPool and Softmax, so a ReLU6 (EfficientNet-Lite0, MobileNet) or a
functional activation back-propagates its plain gradient there and the attributions no longer sum to
``f(x) - f(x')``; and where ``|delta in| < eps`` at a max pooling it takes the gradient of the first row of the
batch for every row. Softmax inside a model keeps its gradient here (Captum's softmax rule subtracts a mean over
the whole batch, so it depends on which images are batched together).

``rule="reveal_cancel"`` (four rows per pair: image, reference and the positive and negative parts of their
difference; see the RevealCancel section below) has no Captum counterpart; its tests compare it with the paper's
formulas written out by hand.
"""
from __future__ import annotations

import inspect
import warnings
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from interpretorch.attribution.common import method_inputs, row_scores
from interpretorch.attribution.integrated import ig_baseline
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.attribution.registry import register
from interpretorch.core.batching import chunks
from interpretorch.capture import capture
from interpretorch.explanation import Explanation
from interpretorch.core.targets import (Target, check_finite, is_callable_target, is_target_object, split_target,
                                        target_indices)


def _inplace_position(fn: Callable) -> int | None:
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("inplace") if "inplace" in names else None


def _elementwise_table() -> dict:
    """func -> (position of an ``inplace`` argument or None, always in place) for the elementwise nonlinearities."""
    t = torch.Tensor
    table: dict = {}
    for f in (F.relu, F.relu6, F.hardtanh, F.elu, F.leaky_relu, F.silu, F.hardswish, F.hardsigmoid, F.mish, F.selu,
              F.celu, F.threshold, F.softplus, F.gelu, F.logsigmoid, F.softsign, F.tanhshrink,
              torch.relu, t.relu, torch.sigmoid, t.sigmoid, torch.tanh, t.tanh, F.sigmoid, F.tanh):
        table[f] = (_inplace_position(f), False)
    for f in (torch.relu_, t.relu_, F.relu_, F.elu_, F.leaky_relu_, F.hardtanh_, F.celu_, F.selu_, F.rrelu_,
              torch.sigmoid_, t.sigmoid_, torch.tanh_, t.tanh_, torch.threshold_):
        table[f] = (None, True)
    table.pop(F.rrelu_, None)  # random in training, a fixed LeakyReLU in eval: keep its gradient
    for f in (torch.clamp, torch.clip, t.clamp, t.clip, torch.clamp_min, t.clamp_min, torch.clamp_max, t.clamp_max):
        table[f] = (None, False)
    for f in (torch.clamp_, torch.clip_, t.clamp_, t.clip_, torch.clamp_min_, t.clamp_min_, torch.clamp_max_,
              t.clamp_max_):
        table[f] = (None, True)
    return table


_ELEMENTWISE = _elementwise_table()
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_POOLS = {F.max_pool1d: F.max_pool1d, F.max_pool2d: F.max_pool2d, F.max_pool3d: F.max_pool3d}


def _is_number(v: object) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _pair_halves(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = t.shape[0] // 2
    return t[:n], t[n:]


def _pool_multipliers(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, pool: Callable, eps: float) -> torch.Tensor:
    """The max-pooling rescale rule's gradient for the paired rows ``x`` = [images; references], ``y`` = pool(x),
    given the output gradient ``g`` of both halves: the pair's output difference goes to the position of the
    larger maximum, divided by the input difference there (the true gradient where it is below eps)."""
    with torch.enable_grad():
        xx = x.detach().requires_grad_(True)
        yy = pool(xx)

    def route(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(yy, xx, v, retain_graph=True)[0]

    with torch.no_grad():
        y_in, y_ref = _pair_halves(y)
        g_in, g_ref = _pair_halves(g)
        top = torch.maximum(y_in, y_ref)
        r_in, r_ref = _pair_halves(route(torch.cat([g_in * (top - y_ref), g_ref * (y_in - top)])))
        x_in, x_ref = _pair_halves(x)
        dx = x_in - x_ref
        small = torch.cat([dx.abs() < eps] * 2)
        rescaled = torch.cat([(r_in + r_ref) / torch.where(dx == 0, torch.ones_like(dx), dx)] * 2)
        return torch.where(small, route(g), rescaled)


def _multiplier(x: torch.Tensor, y: torch.Tensor, ref: torch.Tensor, y_ref: torch.Tensor, f: Callable, eps: float,
                slope: Callable | None) -> torch.Tensor:
    """(f(x) - f(x')) / (x - x'), the derivative at x where |x - x'| < eps (``slope(x)`` in closed form where
    known, else autograd); ``ref`` and ``y_ref`` broadcast against ``x``."""
    dx = x - ref
    m = (y - y_ref).div_(dx)
    small = dx.abs_() < eps
    if slope is not None:
        return torch.where(small, slope(x), m)
    if small.any():
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (d,) = torch.autograd.grad(f(xx * 1), xx, torch.ones_like(y))
        m = torch.where(small, d, m)
    return m


class _Rescale(torch.autograd.Function):
    """y = f(x); backward: the multiplier of the image's row and its reference's (``_multiplier``)."""

    @staticmethod
    def forward(ctx, x, ref, index, f, eps, slope):  # noqa: D102
        y = f(x)
        y_ref = f(ref)
        if ref.shape[0] != 1 or x.shape[0] == 1:  # distinct references only: broadcast one, else pick each row's
            ref, y_ref = ref[index], y_ref[index]
        ctx.save_for_backward(_multiplier(x, y, ref, y_ref, f, eps, slope))
        return y

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (m,) = ctx.saved_tensors
        return g * m, None, None, None, None, None


class _RescaleSlots(torch.autograd.Function):
    """y = f(x) for the image rows once; the multipliers for each of the references ``refs`` (one row each) are
    kept, and a backward pass uses those of reference ``state.slot``."""

    @staticmethod
    def forward(ctx, x, refs, state, f, eps, slope):  # noqa: D102
        y = f(x)
        y_refs = f(refs)
        ctx.save_for_backward(torch.stack([_multiplier(x, y, refs[j:j + 1], y_refs[j:j + 1], f, eps, slope)
                                           for j in range(refs.shape[0])]))
        ctx.state = state
        return y

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        (m,) = ctx.saved_tensors
        return g * m[ctx.state.slot], None, None, None, None, None


def _bounds(func: Callable, args: tuple, kwargs: dict) -> tuple[float, float] | None:
    """(low, high) of ReLU / ReLU6 / Hardtanh calls, whose derivative is 1 strictly between them and 0 outside
    (PyTorch's convention at the kinks), else None."""
    if func in (F.relu, torch.relu, torch.Tensor.relu, torch.relu_, torch.Tensor.relu_, F.relu_):
        return 0.0, float("inf")
    if func is F.relu6:
        return 0.0, 6.0
    if func in (F.hardtanh, F.hardtanh_):
        names = ("input", "min_val", "max_val")
        bound = {"min_val": -1.0, "max_val": 1.0, **dict(zip(names, args)), **kwargs}
        lo, hi = bound["min_val"], bound["max_val"]
        if _is_number(lo) and _is_number(hi) and lo is not None and hi is not None:
            return float(lo), float(hi)
    return None


def _pool_rule(x: torch.Tensor, ref: torch.Tensor, g: torch.Tensor, pool: Callable, eps: float) -> torch.Tensor:
    """The max-pooling rescale rule's gradient for image rows ``x`` and their reference rows ``ref`` (the
    multipliers of an image's row and of its reference's are equal, so one output gradient ``g`` serves both)."""
    with torch.enable_grad():
        xx, rr = x.detach().requires_grad_(True), ref.detach().requires_grad_(True)
        yy, yr = pool(xx), pool(rr)
    with torch.no_grad():
        top = torch.maximum(yy, yr)
        (r_in,) = torch.autograd.grad(yy, xx, g * (top - yr), retain_graph=True)
        (plain,) = torch.autograd.grad(yy, xx, g)
        (r_ref,) = torch.autograd.grad(yr, rr, g * (yy - top))
        dx = x - ref
        small = dx.abs() < eps
        return torch.where(small, plain, (r_in + r_ref) / torch.where(dx == 0, torch.ones_like(dx), dx))


class _MaxPoolRef(torch.autograd.Function):
    """Max pooling of the image rows; backward: the max-pooling rescale rule with the reference rows ``ref``."""

    @staticmethod
    def forward(ctx, x, ref, pool, eps):  # noqa: D102
        ctx.save_for_backward(x, ref)
        ctx.pool, ctx.eps = pool, eps
        return pool(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        x, ref = ctx.saved_tensors
        return _pool_rule(x, ref, g, ctx.pool, ctx.eps), None, None, None


class _MaxPoolSlots(torch.autograd.Function):
    """Max pooling of the image rows; a backward pass applies the rule with reference ``state.slot`` of ``refs``."""

    @staticmethod
    def forward(ctx, x, refs, state, pool, eps):  # noqa: D102
        ctx.save_for_backward(x, refs)
        ctx.state, ctx.pool, ctx.eps = state, pool, eps
        return pool(x)

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        x, refs = ctx.saved_tensors
        j = ctx.state.slot
        return _pool_rule(x, refs[j:j + 1].expand_as(x), g, ctx.pool, ctx.eps), None, None, None, None


class _RescaleMode(TorchFunctionMode):
    """Two phases over one chunk of (image, reference) pairs. "record": the references' forward pass (no
    gradient) keeps the input of every elementwise nonlinearity and max pooling, in call order. "apply": the
    images' forward pass routes the same calls through the rescale rule with the recorded reference inputs
    (``ref_index`` maps each image row to its reference's row), so only the image rows are back-propagated."""

    def __init__(self, state: SimpleNamespace) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        st = self.state
        elem = _ELEMENTWISE.get(func)
        pool = _POOLS.get(func)
        if st.paused or (elem is None and pool is None):
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        if not (isinstance(x, torch.Tensor) and x.is_floating_point() and x.dim() > 0):
            return func(*args, **kwargs)
        if st.phase == "record":
            st.rec.append(x.clone() if elem is not None and (elem[1] or kwargs.get("inplace")) else x)
            return func(*args, **kwargs)
        j = st.count
        st.count += 1
        if not (torch.is_grad_enabled() and x.requires_grad):
            return func(*args, **kwargs)
        rec = st.rec[j] if j < len(st.rec) else None
        if rec is None or x.shape[0] != st.rows or rec.shape[0] != st.n_refs or rec.shape[1:] != x.shape[1:]:
            st.unpaired += 1
            return func(*args, **kwargs)
        if pool is not None:
            bound = dict(zip(_POOL_ARGS, args))
            bound.update(kwargs)
            if bound.get("return_indices"):
                st.unpaired += 1
                return func(*args, **kwargs)
            st.reached += 1
            rest = {k: v for k, v in bound.items() if k != "input"}
            if st.slots:
                return _MaxPoolSlots.apply(x, rec, st, lambda t: pool(t, **rest), st.eps)
            return _MaxPoolRef.apply(x, rec[st.ref_index], lambda t: pool(t, **rest), st.eps)
        pos, always = elem
        if func in _CLAMPS and not all(_is_number(v) for v in list(args[1:]) + list(kwargs.values())):
            st.unpaired += 1
            return func(*args, **kwargs)  # tensor bounds: not a function of x alone
        inplace = always or bool(kwargs.get("inplace", args[pos] if pos is not None and len(args) > pos else False))
        st.reached += 1

        def f(t: torch.Tensor) -> torch.Tensor:
            t = t.clone() if inplace else t
            if args:
                return func(t, *args[1:], **kwargs)
            return func(**{**kwargs, ("input" if "input" in kwargs else "self"): t})
        lohi = _bounds(func, args, kwargs)
        if lohi is None:
            slope = None
        elif lohi[1] == float("inf"):
            slope = lambda t: (t > lohi[0]).to(t.dtype)  # noqa: E731
        else:
            slope = lambda t: ((t > lohi[0]) & (t < lohi[1])).to(t.dtype)  # noqa: E731
        if st.slots:
            out = _RescaleSlots.apply(x, rec, st, f, st.eps, slope)
        else:
            out = _Rescale.apply(x, rec, st.ref_index, f, st.eps, slope)
        return x.copy_(out) if inplace else out


_CLAMPS = frozenset((torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip, torch.clamp_, torch.clip_,
                     torch.Tensor.clamp_, torch.Tensor.clip_, torch.clamp_min, torch.Tensor.clamp_min, torch.clamp_max,
                     torch.Tensor.clamp_max, torch.clamp_min_, torch.Tensor.clamp_min_, torch.clamp_max_,
                     torch.Tensor.clamp_max_))


# ---------------------------------------------------------------------------------------------- RevealCancel
#
# Rows come in four blocks of n: the images a, the references r, and the positive and negative parts P, N of the
# difference a - r (P + N = a - r everywhere). The input's parts are its positive and negative differences.
# Linear operations keep a and r as they are and send the parts through the split of their weights (P' = W+ P +
# W- N, N' = W+ N + W- P, no bias), so consecutive linear operations split like the one linear layer they
# compose to. An elementwise nonlinearity f turns its input parts into (Shrikumar et al. 2017, eq. 3.5.3)
#     dy+ = 1/2 (f(r + P) - f(r)) + 1/2 (f(r + P + N) - f(r + N)),
#     dy- = 1/2 (f(r + N) - f(r)) + 1/2 (f(r + P + N) - f(r + P)),
# back-propagates dy+ / P to P and dy- / N to N, and hands the next layer its output difference split by sign
# (the paper's linear rule: the sign of w_i dx_i decides). Max pooling uses the rescale rule's routing on P + N.

_SIGNED_BINARY = {torch.add: "add", torch.Tensor.add: "add", torch.Tensor.__add__: "add",
                  torch.Tensor.__radd__: "add", torch.Tensor.__iadd__: "add", torch.Tensor.add_: "add",
                  torch.sub: "sub", torch.Tensor.sub: "sub", torch.Tensor.__sub__: "sub",
                  torch.Tensor.__isub__: "sub", torch.Tensor.sub_: "sub", torch.Tensor.__rsub__: "rsub",
                  torch.mul: "mul", torch.Tensor.mul: "mul", torch.Tensor.__mul__: "mul",
                  torch.Tensor.__rmul__: "mul", torch.Tensor.__imul__: "mul", torch.Tensor.mul_: "mul",
                  torch.div: "div", torch.Tensor.div: "div", torch.Tensor.__truediv__: "div",
                  torch.Tensor.__itruediv__: "div", torch.Tensor.div_: "div",
                  torch.neg: "neg", torch.Tensor.neg: "neg", torch.Tensor.__neg__: "neg"}
_IN_PLACE = {torch.Tensor.__iadd__, torch.Tensor.add_, torch.Tensor.__isub__, torch.Tensor.sub_,
             torch.Tensor.__imul__, torch.Tensor.mul_, torch.Tensor.__itruediv__, torch.Tensor.div_}
_WEIGHTED = {F.conv1d: 1, F.conv2d: 1, F.conv3d: 1, F.linear: 1, torch.conv1d: 1, torch.conv2d: 1, torch.conv3d: 1}


class _SignSplit(torch.autograd.Function):
    """d -> (max(d, 0), min(d, 0)); backward: the positive part's gradient where d > 0, the negative part's where
    d < 0, their mean where d = 0 (the paper's linear rule)."""

    @staticmethod
    def forward(ctx, d):  # noqa: D102
        ctx.save_for_backward(d)
        return d.clamp(min=0), d.clamp(max=0)

    @staticmethod
    def backward(ctx, gp, gn):  # noqa: D102
        (d,) = ctx.saved_tensors
        return torch.where(d > 0, gp, torch.where(d < 0, gn, 0.5 * (gp + gn)))


class _PoolDifference(torch.autograd.Function):
    """pool(a) - pool(r) as a function of the difference a - r, back-propagated with the rescale rule's routing."""

    @staticmethod
    def forward(ctx, d, ar, pool, eps):  # noqa: D102
        y = pool(ar)
        ctx.save_for_backward(ar, y)
        ctx.pool, ctx.eps = pool, eps
        y_in, y_ref = _pair_halves(y)
        return y_in - y_ref

    @staticmethod
    def backward(ctx, g):  # noqa: D102
        ar, y = ctx.saved_tensors
        return _pair_halves(_pool_multipliers(ar, y, torch.cat([g, g]), ctx.pool, ctx.eps))[0], None, None, None


def _blocks(t: torch.Tensor) -> list[torch.Tensor]:
    n = t.shape[0] // 4
    return [t[i * n:(i + 1) * n] for i in range(4)]


class _RevealCancelMode(TorchFunctionMode):
    """Carry the positive and negative parts of every difference through a forward pass of four row blocks and
    apply the RevealCancel rule at every elementwise nonlinearity."""

    def __init__(self, state: SimpleNamespace) -> None:
        super().__init__()
        self.state = state

    def _is_block(self, t: object) -> bool:
        return isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == self.state.rows

    def _check_parts(self, x: torch.Tensor, where: str) -> None:
        a, r, p, q = (b.detach() for b in _blocks(x))
        d = a - r
        gap = (p + q - d).abs().max()
        if gap > 1e-4 * (1 + float(d.abs().max())):
            raise ValueError(f"deeplift rule='reveal_cancel': the parts of the differences no longer add up before "
                             f"{where} (gap {float(gap):.3g}): the model uses an operation the rule does not know "
                             f"(supported: convolutions, linear layers, eval-mode BatchNorm, sums, scaling, "
                             f"pooling, reshaping and elementwise nonlinearities); use rule='rescale'")

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        st = self.state
        if st.paused:
            return func(*args, **kwargs)
        if func in _WEIGHTED:
            return self._weighted(func, args, kwargs)
        if func is F.batch_norm:
            return self._batch_norm(args, kwargs)
        if func in _SIGNED_BINARY:
            return self._signed(func, args, kwargs)
        elem = _ELEMENTWISE.get(func)
        pool = _POOLS.get(func)
        if elem is None and pool is None:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        if not (self._is_block(x) and x.is_floating_point()):
            return func(*args, **kwargs)
        self._check_parts(x, getattr(func, "__name__", str(func)))
        a, r, p, q = _blocks(x)
        if pool is not None:
            bound = dict(zip(_POOL_ARGS, args))
            bound.update(kwargs)
            if bound.get("return_indices"):
                raise ValueError("deeplift rule='reveal_cancel' does not support max pooling with return_indices")
            st.reached += 1
            rest = {k: v for k, v in bound.items() if k != "input"}

            def pooled(t: torch.Tensor) -> torch.Tensor:
                return pool(t, **rest)
            with torch.no_grad():
                ya, yr = _pair_halves(pooled(torch.cat([a, r]).detach()))
            d = _PoolDifference.apply(p + q, torch.cat([a, r]).detach(), pooled, st.eps)
        else:
            pos, always = elem
            if func in (torch.clamp, torch.clip, torch.Tensor.clamp, torch.Tensor.clip, torch.clamp_, torch.clip_,
                        torch.Tensor.clamp_, torch.Tensor.clip_, torch.clamp_min, torch.Tensor.clamp_min,
                        torch.clamp_max, torch.Tensor.clamp_max, torch.clamp_min_, torch.Tensor.clamp_min_,
                        torch.clamp_max_, torch.Tensor.clamp_max_):
                if not all(_is_number(v) for v in list(args[1:]) + list(kwargs.values())):
                    raise ValueError("deeplift rule='reveal_cancel' does not support clamping to tensor bounds")
            inplace = always or bool(kwargs.get("inplace", args[pos] if pos is not None and len(args) > pos
                                                else False))
            st.reached += 1

            def f(t: torch.Tensor) -> torch.Tensor:
                t = t.clone() if inplace else t
                if args:
                    return func(t, *args[1:], **kwargs)
                return func(**{**kwargs, ("input" if "input" in kwargs else "self"): t})
            with torch.no_grad():
                a0, r0, p0, q0 = a.detach(), r.detach(), p.detach(), q.detach()
                ya, yr, y_in = f(a0), f(r0), f(a0)
                y_p, y_q = f(r0 + p0), f(r0 + q0)
                d_pos = 0.5 * (y_p - yr) + 0.5 * (y_in - y_q)
                d_neg = 0.5 * (y_q - yr) + 0.5 * (y_in - y_p)
                m_pos = torch.where(p0.abs() < st.eps, torch.zeros_like(p0), d_pos / torch.where(
                    p0.abs() < st.eps, torch.ones_like(p0), p0))
                m_neg = torch.where(q0.abs() < st.eps, torch.zeros_like(q0), d_neg / torch.where(
                    q0.abs() < st.eps, torch.ones_like(q0), q0))
            lin = p * m_pos + q * m_neg
            d = (ya - yr) + (lin - lin.detach())  # the value is the exact difference, the gradient the multipliers
        up, un = _SignSplit.apply(d)
        out = torch.cat([ya, yr, up, un])
        if (pool is None and inplace) and isinstance(x, torch.Tensor):
            return x.copy_(out)
        return out

    def _weighted(self, func, args, kwargs):
        x = args[0] if args else kwargs.get("input")
        if not self._is_block(x):
            return func(*args, **kwargs)
        names = ("input", "weight", "bias")
        bound = dict(zip(names, args[:3]))
        bound.update({k: v for k, v in kwargs.items() if k in names})
        rest_args = args[3:]
        rest = {k: v for k, v in kwargs.items() if k not in names}
        w, b = bound["weight"].detach(), bound.get("bias")
        a, r, p, q = _blocks(x)
        with torch.no_grad():
            ar = func(torch.cat([a, r]).detach(), w, None if b is None else b.detach(), *rest_args, **rest)
        pq = torch.cat([p, q])
        plus = func(pq, w.clamp(min=0), None, *rest_args, **rest)
        minus = func(pq, w.clamp(max=0), None, *rest_args, **rest)
        pp, pn = _pair_halves(plus)
        mp, mn = _pair_halves(minus)
        return torch.cat([ar, pp + mn, pn + mp])

    def _batch_norm(self, args, kwargs):
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        x = bound["input"]
        if not self._is_block(x):
            return F.batch_norm(*args, **kwargs)
        if bound.get("training") or bound.get("running_var") is None:
            raise ValueError("deeplift rule='reveal_cancel' needs BatchNorm in eval mode (call model.eval())")
        a, r, p, q = _blocks(x)
        with torch.no_grad():
            ar = F.batch_norm(torch.cat([a, r]).detach(), *[v.detach() if isinstance(v, torch.Tensor) else v
                                                          for v in args[1:]], **kwargs)
            var = bound["running_var"].detach()
            scale = 1.0 / torch.sqrt(var + bound.get("eps", 1e-5))
            if bound.get("weight") is not None:
                scale = scale * bound["weight"].detach()
            shape = (1, -1) + (1,) * (x.dim() - 2)
            sp, sn = scale.clamp(min=0).reshape(shape), scale.clamp(max=0).reshape(shape)
        return torch.cat([ar, sp * p + sn * q, sp * q + sn * p])

    def _signed(self, func, args, kwargs):
        kind = _SIGNED_BINARY[func]
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        if kind == "neg":
            if not self._is_block(x):
                return func(*args, **kwargs)
            a, r, p, q = _blocks(x)
            out = torch.cat([-a, -r, -q, -p])
        else:
            other = args[1] if len(args) > 1 else kwargs.get("other")
            alpha = kwargs.get("alpha", 1)
            xb, ob = self._is_block(x), self._is_block(other)
            if kind in ("add", "sub", "rsub"):
                if not (xb or ob) or (kind == "add" and xb and ob and alpha == 1):
                    return func(*args, **kwargs)  # constants, or a sum of blocks: right blockwise
                terms = [(other, ob, 1), (x, xb, -alpha)] if kind == "rsub" else \
                    [(x, xb, 1), (other, ob, alpha if kind == "add" else -alpha)]
                parts = [self._scaled(*_blocks(t), c) for t, is_block, c in terms if is_block]
                a, r, p, q = (sum(z) for z in zip(*parts))
                for t, is_block, c in terms:
                    if not is_block:
                        a, r = a + c * t, r + c * t
                out = torch.cat([a, r, p, q])
            else:
                if xb == ob or (kind == "div" and not xb):
                    return func(*args, **kwargs)  # products of blocks are not linear: the parts check finds them
                block, c = (x, other) if xb else (other, x)
                if kind == "div":
                    c = c.reciprocal() if isinstance(c, torch.Tensor) else 1.0 / c
                out = torch.cat(self._scaled(*_blocks(block), c))
        if func in _IN_PLACE:
            return args[0].copy_(out)
        return out

    @staticmethod
    def _scaled(a, r, p, q, c):
        if isinstance(c, torch.Tensor):
            cp, cn = c.clamp(min=0), c.clamp(max=0)
            return a * c, r * c, cp * p + cn * q, cp * q + cn * p
        if c >= 0:
            return a * c, r * c, p * c, q * c
        return a * c, r * c, q * c, p * c


def reveal_cancel_pass(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, target: Target, batch_size: int,
                       eps: float = 1e-10) -> dict:
    """DeepLIFT with the RevealCancel rule over all (reference k, image i) pairs, like ``rescale_pass`` (same
    returned fields); each pair is four rows (image, reference, positive and negative parts of the difference)."""
    if is_callable_target(target) or (is_target_object(target) and target.kind != "regression"):
        raise ValueError("deeplift rule='reveal_cancel' explains class indices or regression outputs; a callable "
                         "target or a detection / segmentation / similarity target is not linear in the outputs "
                         "(use rule='rescale')")
    b = x.shape[0]
    k_refs = refs.shape[0]
    n_pairs = k_refs * b
    per_call = max(1, batch_size // 4)
    acc = torch.float64 if x.device.type != "mps" else x.dtype
    total = torch.zeros_like(x, dtype=acc)
    ref_scores = torch.zeros(b, dtype=acc, device=x.device)
    idx_all = torch.zeros(b, dtype=torch.long, device=x.device)
    clean, outs = torch.zeros(b, dtype=x.dtype, device=x.device), []
    st = SimpleNamespace(rows=0, reached=0, paused=False, eps=eps)
    reached = 0
    mode = _RevealCancelMode(st)
    with capture(model, []), mode:
        for ci, sl in enumerate(chunks(n_pairs, per_call)):
            p = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = p // b, p % b
            r = refs[k, i if refs.shape[1] == b else torch.zeros_like(i)]
            n = len(p)
            diff = x[i] - r
            pos = diff.clamp(min=0).requires_grad_(True)
            neg = diff.clamp(max=0).requires_grad_(True)
            st.rows, st.reached = 4 * n, 0
            out = model(torch.cat([x[i], r, pos, neg]))
            st.paused = True
            try:
                check_finite(out, "outputs on images and references")
                if not isinstance(out, torch.Tensor):
                    raise ValueError("deeplift rule='reveal_cancel' needs a model with one output tensor")
                mode._check_parts(out, "the output")
                first = k == 0
                if first.any():
                    head = out[:n][first]
                    t = split_target(target, i[first].cpu())
                    idx_all[i[first]] = target_indices(head, t)
                    outs.append(head.detach())
                s = row_scores(out, target, idx_all[i].repeat(4))
                gp, gn = torch.autograd.grad(s[2 * n:].sum(), [pos, neg], allow_unused=True)
            finally:
                st.paused = False
            if ci == 0:
                reached = st.reached
            clean[i[first]] = s[:n][first].detach().to(x.dtype)
            gp = torch.zeros_like(pos) if gp is None else gp
            gn = torch.zeros_like(neg) if gn is None else gn
            total.index_add_(0, i, (pos.detach() * gp + neg.detach() * gn).to(acc))
            ref_scores.index_add_(0, i, s[n:2 * n].detach().to(acc))
    return {"attr": (total / k_refs).to(x.dtype), "ref_scores": ref_scores / k_refs, "rescaled": reached,
            "unpaired": 0, "pairs": n_pairs, "idx": idx_all, "scores": clean,
            "outputs": torch.cat(outs) if outs and sum(len(o) for o in outs) == b else None}


def _rows_of(out: object, index: torch.Tensor) -> object:
    """The rows ``index`` of a model output (a tensor, or tensors in tuples, lists and dicts; a list of one dict
    per row, as detectors return, is a list of rows)."""
    if isinstance(out, torch.Tensor):
        return out[index]
    if isinstance(out, (tuple, list)) and out and all(isinstance(o, dict) for o in out):
        rows = index.nonzero().flatten() if index.dtype == torch.bool else index.reshape(-1)
        return [out[j] for j in rows.tolist()]
    if isinstance(out, (tuple, list)):
        return type(out)(_rows_of(o, index) for o in out)
    if isinstance(out, dict):
        return {k: _rows_of(v, index) for k, v in out.items()}
    return out


_SLOTS = 4  # references sharing one forward pass of the image rows (their multipliers are all kept)


def rescale_pass(model: nn.Module, x: torch.Tensor, refs: torch.Tensor, target: Target, batch_size: int,
                 eps: float = 1e-10) -> dict:
    """DeepLIFT over all (reference k, image i) pairs, reference-major (pair p = (p // B, p % B)); ``refs`` is
    (K, B, C, H, W) or (K, 1, C, H, W). Returns the mean over k of the attributions, the class per image (read
    off its first pair, so no separate clean pass), its score and output, the mean reference score and the
    number of rescaled / unpaired operations in the first call. Each call carries ``batch_size`` image rows
    (with gradients); the distinct references of those pairs go through first, without gradients (a reference
    shared by all images, like the zeros, is one row). With several references shared by all images, an image row
    goes forward once for up to ``_SLOTS`` of them and is back-propagated once per reference."""
    b = x.shape[0]
    if refs.shape[1] == b and b > 1 and all(bool((refs[k] == refs[k, :1]).all()) for k in range(refs.shape[0])):
        refs = refs[:, :1]  # one reference per k for every image: forward it once
    k_refs, shared = refs.shape[0], refs.shape[1] == 1
    flat_refs = refs.reshape((-1,) + tuple(x.shape[1:]))
    n_pairs = k_refs * b
    acc = torch.float64 if x.device.type != "mps" else x.dtype
    total = torch.zeros_like(x, dtype=acc)
    ref_scores = torch.zeros(b, dtype=acc, device=x.device)
    idx_all = None if is_callable_target(target) else torch.zeros(b, dtype=torch.long, device=x.device)
    clean, outs = torch.zeros(b, dtype=x.dtype, device=x.device), []
    st = SimpleNamespace(rows=0, reached=0, unpaired=0, paused=False, eps=eps, phase="record", rec=[], count=0,
                         n_refs=0, ref_index=None, slots=0, slot=0)
    reached = unpaired = 0
    layout = row_layout(model, x)
    if shared and k_refs > 1:
        # references shared by all images (DeepLiftShap's background): each image row goes forward once for up to
        # _SLOTS references and is back-propagated once per reference
        with capture(model, []), _RescaleMode(st):
            ci = 0
            for g0 in range(0, k_refs, _SLOTS):
                ks = list(range(g0, min(k_refs, g0 + _SLOTS)))
                gk = len(ks)
                st.phase, st.rec, st.slots = "record", [], 0
                with torch.no_grad():
                    out_ref = model(in_layout(flat_refs[ks].clone(), layout))
                check_finite(out_ref, "outputs on references")
                rec = st.rec
                for sl in chunks(b * gk, max(1, batch_size) * gk):  # pair q = (image q // gk, reference q % gk)
                    i = torch.arange(sl.start // gk, sl.stop // gk, device=x.device)
                    n = len(i)
                    st.phase, st.rec, st.count, st.rows, st.n_refs, st.slots = "apply", rec, 0, n, gk, gk
                    st.reached, st.unpaired = 0, 0
                    rows = in_layout(x[i], layout).requires_grad_(True)
                    out = model(rows.clone())
                    st.paused = True
                    try:
                        st.unpaired += abs(len(rec) - st.count)
                        check_finite(out, "outputs on images")
                        if g0 == 0:
                            head = out if isinstance(out, torch.Tensor) else None
                            if idx_all is not None:
                                t = split_target(target, i.cpu())
                                idx_all[i] = target_indices(head if head is not None else out, t)
                            if head is not None:
                                outs.append(head.detach())
                        idx = None if idx_all is None else idx_all[i]
                        s = row_scores(out, target, idx)
                        grads = []
                        for j in range(gk):
                            st.slot = j
                            (g,) = torch.autograd.grad(s.sum(), rows, retain_graph=j < gk - 1, allow_unused=True)
                            grads.append(torch.zeros_like(rows) if g is None else g)
                            pick = torch.full((n,), j, dtype=torch.long, device=x.device)
                            ref_scores.index_add_(0, i, row_scores(_rows_of(out_ref, pick), target, idx).detach()
                                                  .to(acc))
                    finally:
                        st.paused = False
                    if ci == 0:
                        reached, unpaired = st.reached, st.unpaired
                    ci += 1
                    if g0 == 0:
                        clean[i] = s.detach().to(x.dtype)
                    for k, g in zip(ks, grads):
                        total.index_add_(0, i, ((x[i] - flat_refs[k]) * g).to(acc))
            st.slots, st.rec = 0, []
        return {"attr": (total / k_refs).to(x.dtype), "ref_scores": ref_scores / k_refs, "rescaled": reached,
                "unpaired": unpaired, "pairs": n_pairs, "idx": idx_all, "scores": clean,
                "outputs": torch.cat(outs) if outs and sum(len(o) for o in outs) == b else None}
    with capture(model, []), _RescaleMode(st):
        for ci, sl in enumerate(chunks(n_pairs, max(1, batch_size))):
            p = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = p // b, p % b
            uniq, inv = torch.unique(k if shared else p, return_inverse=True)
            st.phase, st.rec = "record", []
            with torch.no_grad():
                out_ref = model(in_layout(flat_refs[uniq].clone(), layout))
            check_finite(out_ref, "outputs on references")
            n = len(p)
            st.phase, st.count, st.rows, st.n_refs, st.ref_index = "apply", 0, n, len(uniq), inv
            st.reached, st.unpaired = 0, 0
            rows = in_layout(x[i], layout).requires_grad_(True)
            out = model(rows.clone())  # a non-leaf copy (same memory order): in-place first operations stay legal
            st.paused = True
            try:
                st.unpaired += abs(len(st.rec) - st.count)
                st.rec = []
                check_finite(out, "outputs on images")
                first = k == 0  # an image's first pair: its class comes from its own output
                if first.any():
                    head = out[first] if isinstance(out, torch.Tensor) else None
                    if idx_all is not None:
                        t = split_target(target, i[first].cpu())
                        idx_all[i[first]] = target_indices(head if head is not None else _rows_of(out, first), t)
                    if head is not None:
                        outs.append(head.detach())
                idx = None if idx_all is None else idx_all[i]
                s = row_scores(out, target, idx)
                s_ref = row_scores(_rows_of(out_ref, inv), target, idx)
                (g,) = torch.autograd.grad(s.sum(), rows, allow_unused=True)
            finally:
                st.paused = False
            if ci == 0:
                reached, unpaired = st.reached, st.unpaired
            clean[i[first]] = s[first].detach().to(x.dtype)
            g = torch.zeros_like(rows) if g is None else g
            r = flat_refs[uniq][inv]
            total.index_add_(0, i, ((x[i] - r) * g).to(acc))
            ref_scores.index_add_(0, i, s_ref.detach().to(acc))
    return {"attr": (total / k_refs).to(x.dtype), "ref_scores": ref_scores / k_refs, "rescaled": reached,
            "unpaired": unpaired, "pairs": n_pairs, "idx": idx_all, "scores": clean,
            "outputs": torch.cat(outs) if outs and sum(len(o) for o in outs) == b else None}


def _pass(rule: str) -> Callable:
    """The paired pass of a DeepLIFT rule."""
    if rule == "rescale":
        return rescale_pass
    if rule == "reveal_cancel":
        return reveal_cancel_pass
    raise ValueError(f"rule must be 'rescale' or 'reveal_cancel', got {rule!r}")


def _finish(name: str, model: nn.Module, x: torch.Tensor, res: dict, extras: dict) -> Explanation:
    attr = res["attr"]
    clean = res["scores"]
    delta = attr.double().reshape(x.shape[0], -1).sum(1) - (clean.double() - res["ref_scores"].double())
    if res["rescaled"] == 0:
        warnings.warn(f"{name}: no nonlinearity of {type(model).__name__} was reached (it has none, or they run in "
                      "TorchScript / compiled code): the map is the gradient times (x - reference)", UserWarning,
                      stacklevel=3)
    extras = {**extras, "delta": delta.to(x.dtype), "reference_scores": res["ref_scores"].to(x.dtype),
              "rescaled_operations": res["rescaled"], "unpaired_operations": res["unpaired"],
              "forward_backward_passes": (4 if extras.get("rule") == "reveal_cancel" else 2) * res["pairs"]}
    return Explanation(maps=attr, method=name, target=res["idx"], scores=clean, extras=extras,
                       outputs=res["outputs"])


def deeplift(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
             baseline: str | float | torch.Tensor = "zeros", rule: str = "rescale", eps: float = 1e-10,
             batch_size: int | None = None, blur_sigma: float = 10.0, seed: int = 0) -> Explanation:
    """DeepLIFT (Shrikumar et al. 2017): (x - x') times the multipliers back-propagated with delta output /
    delta input at every nonlinearity; the attributions sum to f(x) - f(x').

    ``rule``: "rescale" (the paper's and Captum's default) or "reveal_cancel" (the paper's RevealCancel rule:
    the positive and negative parts of each difference are propagated separately, so inputs whose effects cancel
    at a ReLU, as in the paper's min(i1, i2) network, share the credit; four rows per pair: image, reference and
    the two parts; linear layers, eval BatchNorm, sums, scaling, pooling and elementwise nonlinearities only, and
    class-index targets).

    ``baseline`` (the reference x'): "zeros" (the paper's and Captum's default), "blur", "uniform", a number or a
    tensor broadcastable to the inputs. A row is an image paired with its reference: ``batch_size`` image rows
    per model call, with gradients, after one call without gradients on their distinct references (one row for a
    shared reference); there is no other pass (reveal_cancel: four rows per pair in one call).
    ``extras["delta"]`` is the summation gap, ``extras["rescaled_operations"]`` the nonlinearities the rule
    reached in one forward pass.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    run_pass = _pass(rule)
    refs = ig_baseline(baseline, x, blur_sigma=blur_sigma, seed=seed)[None]
    res = run_pass(model, x, refs, target, batch_size, eps)
    return _finish("deeplift", model, x, res, {"baseline": refs[0], "eps": eps, "rule": rule,
                                               "baseline_kind": baseline if isinstance(baseline, str) else "given"})


register("deeplift", deeplift, kind="pixel", aliases=("deep_lift",),
         targets=("class", "callable", "segmentation", "similarity", "regression", "function"),
         targets_note="its multipliers do not pass through a detector's decoding (top-k selection, box matching)",
         doc="DeepLIFT (Shrikumar et al. 2017), rescale rule (rule='reveal_cancel': RevealCancel), reference zeros; "
             "a row is an image paired with its reference")


def check_distribution(baselines: torch.Tensor, x: torch.Tensor, what: str = "baselines") -> torch.Tensor:
    """A (K, C, H, W) distribution of references for images shaped like ``x``, on its device and dtype."""
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(f"{what} must be a tensor (K, C, H, W) of reference images, got {type(baselines).__name__}")
    if baselines.dim() != 4 or tuple(baselines.shape[1:]) != tuple(x.shape[1:]) or baselines.shape[0] < 1:
        raise ValueError(f"{what} must have shape (K, {', '.join(map(str, x.shape[1:]))}) with K >= 1, got "
                         f"{tuple(baselines.shape)}")
    if not torch.isfinite(baselines).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return baselines.detach().to(device=x.device, dtype=x.dtype)


def deeplift_shap(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                  baselines: torch.Tensor | None = None, rule: str = "rescale", eps: float = 1e-10,
                  blur_sigma: float = 10.0, batch_size: int | None = None) -> Explanation:
    """DeepLiftShap (Lundberg & Lee 2017): the mean of DeepLIFT attributions over a distribution of references,
    approximating SHAP values.

    ``baselines``: (K, C, H, W) reference images shared by all images (a background sample of the data; the SHAP
    paper used 100-1000); without them, two references per image: zeros and the image blurred by a Gaussian of
    ``blur_sigma`` pixels. A row is an image paired with one of its references: K x B pairs, ``batch_size``
    image rows per model call, as in ``deeplift``. ``rule``: "rescale" or "reveal_cancel", as in ``deeplift``.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    run_pass = _pass(rule)
    if baselines is None:
        refs = torch.stack([torch.zeros_like(x), ig_baseline("blur", x, blur_sigma=blur_sigma)])
    else:
        refs = check_distribution(baselines, x)[:, None]
    res = run_pass(model, x, refs, target, batch_size, eps)
    return _finish("deeplift_shap", model, x, res, {"n_baselines": refs.shape[0], "eps": eps, "rule": rule})


register("deeplift_shap", deeplift_shap, kind="pixel", aliases=("deepliftshap", "deep_shap", "deepshap"),
         targets=("class", "callable", "segmentation", "similarity", "regression", "function"),
         targets_note="its multipliers do not pass through a detector's decoding (top-k selection, box matching)",
         doc="DeepLiftShap (Lundberg & Lee 2017): DeepLIFT averaged over references; a row is an image paired "
             "with a reference")
