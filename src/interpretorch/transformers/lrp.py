"""AttnLRP (Achtibat et al. 2024) as one forward and one modified backward pass.

Relevance is Gradient x Input under a modified backward: every operation of the forward pass keeps the
invariant "relevance of a tensor = tensor * its modified gradient", so the relevance of any intermediate tensor
(or of the input) is read off as ``t * t.grad``. The rules, applied while the model runs inside ``attnlrp_rules``:

* linear maps (``F.linear``, convolutions, additions, the residual stream): the plain gradient, which is the
  epsilon rule with epsilon -> 0 (biases absorb their share of the relevance);
* LayerNorm (``F.layer_norm``): the standard deviation is treated as a constant (the identity rule on the
  normalisation), so the centring and the affine map pass relevance linearly;
* element-wise non-linearities (``F.gelu``, ``torch.tanh``, ``F.silu``): the identity rule R_x = R_y, i.e. the
  gradient is multiplied by f(x) / x instead of f'(x);
* products of two activations (``torch.matmul`` / ``@`` / ``torch.bmm`` when both operands carry relevance:
  Q K^T and A V): the uniform rule, each operand gets half of the relevance (the gradient is halved);
* softmax: AttnLRP's rule R_x = x * (R_s - s * sum R_s) is exactly x * (plain softmax gradient), so softmax
  keeps its gradient;
* fused attention (``F.scaled_dot_product_attention``) is decomposed into those pieces, with its mask.

Nothing is patched on the model: a ``TorchFunctionMode`` sees the functional calls the modules make. Code that
runs below Python (TorchScript, ``nn.MultiheadAttention``'s fused function) keeps plain gradients.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.autograd import Function
from torch.overrides import TorchFunctionMode


class _HalfGrad(Function):
    """Identity forward; the backward halves the gradient (the uniform rule for a product of two inputs)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return 0.5 * g


class _IdentityRule(Function):
    """y = f(x) forward (given); the backward multiplies by ``ratio`` = f(x) / x (the identity rule R_x = R_y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(ratio)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # noqa: D102
        (ratio,) = ctx.saved_tensors
        return g * ratio, None, None


def _safe_ratio(x: torch.Tensor, y: torch.Tensor, limit: float) -> torch.Tensor:
    """y / x, with its limit f'(0) where x is (nearly) 0."""
    small = x.abs() <= torch.finfo(x.dtype).eps
    return torch.where(small, torch.full_like(x, limit), y / torch.where(small, torch.ones_like(x), x))


def _gelu_identity(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU through the identity rule: gelu(x) / x is Phi(x) (or its tanh form), computed without a division."""
    y = F.gelu(x, approximate=approximate)
    if not x.requires_grad:
        return y
    with torch.no_grad():
        if approximate == "tanh":
            ratio = 0.5 * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)))
        else:
            ratio = 0.5 * (1 + torch.erf(x * 0.5 ** 0.5))
    return _IdentityRule.apply(x, y.detach(), ratio)


def _identity_rule(x: torch.Tensor, y: torch.Tensor, limit: float) -> torch.Tensor:
    """Element-wise f through the identity rule, from x and y = f(x); ``limit`` = f'(0)."""
    if not x.requires_grad:
        return y
    with torch.no_grad():
        ratio = _safe_ratio(x, y, limit)
    return _IdentityRule.apply(x, y.detach(), ratio)


def _layer_norm_const_std(x: torch.Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5):
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    mean = x.mean(dims, keepdim=True)
    var = (x - mean).pow(2).mean(dims, keepdim=True)
    y = (x - mean) / (var + eps).sqrt().detach()
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _half(t: torch.Tensor) -> torch.Tensor:
    return _HalfGrad.apply(t) if t.requires_grad else t


def _both_relevant(a: object, b: object) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.requires_grad and b.requires_grad


def _sdpa(state: "RuleCounts", query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
          enable_gqa=False):
    if enable_gqa and query.shape[-3] != key.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = torch.matmul(query, key.transpose(-2, -1))
    if state.rules and _both_relevant(query, key):
        logits = _half(logits)
    logits = logits * scale
    t, s = logits.shape[-2], logits.shape[-1]
    if is_causal:
        causal = torch.ones(t, s, dtype=torch.bool, device=logits.device).tril()
        logits = logits.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            logits = logits.masked_fill(~attn_mask, float("-inf"))
        else:
            logits = logits + attn_mask
    probs = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)
    if state.conservative:
        probs = probs.detach()
    if state.record and probs.requires_grad:
        logits.retain_grad()
        probs.retain_grad()
        state.softmax.append((logits, probs))
    if state.sequence:
        state.probs.append(probs)
    out = torch.matmul(probs, value)
    return _half(out) if state.rules and _both_relevant(probs, value) else out


def _mha(state: "RuleCounts", query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
         bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True,
         key_padding_mask=None, need_weights=True, attn_mask=None, use_separate_proj_weight=False,
         q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
         average_attn_weights=True, is_causal=False):
    """``F.multi_head_attention_forward`` ((L, N, E) inputs) decomposed into projections and ``_sdpa``."""
    if bias_k is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise NotImplementedError("nn.MultiheadAttention with add_bias_kv, add_zero_attn or static keys is not "
                                  "covered")
    if training and dropout_p:
        raise ValueError("AttnLRP needs the model in eval mode (attention dropout is active)")
    if query.dim() != 3:
        raise NotImplementedError("nn.MultiheadAttention needs batched (3-D) inputs here")
    if use_separate_proj_weight:
        wq, wk, wv = q_proj_weight, k_proj_weight, v_proj_weight
    else:
        wq, wk, wv = in_proj_weight.chunk(3)
    bq = bk = bv = None
    if in_proj_bias is not None:
        bq, bk, bv = in_proj_bias.chunk(3)
    t, n, e = query.shape
    s, h = key.shape[0], int(num_heads)

    def heads(x, w, b):
        y = F.linear(x, w, b)
        return y.reshape(y.shape[0], n, h, e // h).permute(1, 2, 0, 3)  # (N, H, L, d)
    q, k, v = heads(query, wq, bq), heads(key, wk, bk), heads(value, wv, bv)
    mask = torch.zeros(n, 1, t, s, dtype=q.dtype, device=q.device)
    if key_padding_mask is not None:
        kpm = key_padding_mask
        kpm = (torch.zeros(kpm.shape, dtype=q.dtype, device=q.device).masked_fill(kpm, float("-inf"))
               if kpm.dtype == torch.bool else kpm.to(q.dtype))
        mask = mask + kpm.reshape(n, 1, 1, s)
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
    if attn_mask is not None:
        am = (torch.zeros(attn_mask.shape, dtype=q.dtype, device=q.device).masked_fill(attn_mask, float("-inf"))
              if attn_mask.dtype == torch.bool else attn_mask.to(q.dtype))
        mask = mask + (am.reshape(1, 1, t, s) if am.dim() == 2 else am.reshape(n, h, t, s))
    o = _sdpa(state, q, k, v, attn_mask=mask)
    out = F.linear(o.permute(2, 0, 1, 3).reshape(t, n, e), out_proj_weight, out_proj_bias)
    weights = None
    if need_weights:
        weights = state.probs[-1].detach() if state.probs else None
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)
    return out, weights


@dataclass
class RuleCounts:
    """How many operations of each kind the rules reached during the forward pass; with ``record`` the logits
    and probabilities of each decomposed attention (their ``.grad`` is kept, so their relevance can be read)."""

    counts: dict[str, int] = field(default_factory=dict)
    conservative: bool = False
    record: bool = False
    softmax: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    sequence: bool = False
    rules: bool = True
    probs: list[torch.Tensor] = field(default_factory=list)

    def softmax_leak(self) -> list[torch.Tensor]:
        """Per recorded attention: relevance at its probabilities minus at its logits, per image (B,) - what the
        softmax rule's bias term absorbs."""
        out = []
        for logits, probs in self.softmax:
            if logits.grad is None or probs.grad is None:
                raise RuntimeError("run the backward pass first")
            lg = torch.where(torch.isfinite(logits), logits, torch.zeros_like(logits))
            r_in = (lg * logits.grad).flatten(1).sum(1)
            r_out = (probs * probs.grad).flatten(1).sum(1)
            out.append((r_out - r_in).detach())
        return out

    def add(self, name: str) -> None:
        """Count one operation."""
        self.counts[name] = self.counts.get(name, 0) + 1


class _AttnLRPMode(TorchFunctionMode):
    def __init__(self, counts: RuleCounts) -> None:
        super().__init__()
        self.counts = counts

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105
        kwargs = kwargs or {}
        if self.counts.sequence:
            handled, out = self._sequence(func, args, kwargs)
            if handled:
                return out
            if not self.counts.rules:
                return func(*args, **kwargs)
        if func is F.layer_norm:
            self.counts.add("layer_norm")
            return _layer_norm_const_std(*args, **kwargs)
        if func is F.gelu:
            self.counts.add("gelu")
            return _gelu_identity(*args, **kwargs)
        if func in (torch.tanh, torch.Tensor.tanh):
            self.counts.add("tanh")
            return _identity_rule(args[0], func(*args, **kwargs), 1.0)
        if func is F.silu:
            self.counts.add("silu")
            return _identity_rule(args[0], func(*args, **kwargs), 0.5)
        if func is F.scaled_dot_product_attention:
            self.counts.add("sdpa")
            if kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0):
                raise ValueError("AttnLRP needs the model in eval mode (attention dropout is active)")
            return _sdpa(self.counts, *args, **kwargs)
        if func in (F.softmax, torch.softmax, torch.Tensor.softmax) and self.counts.conservative:
            self.counts.add("softmax")
            return func(*args, **kwargs).detach()
        if func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm):
            out = func(*args, **kwargs)
            if len(args) >= 2 and _both_relevant(args[0], args[1]):
                self.counts.add("matmul")
                return _half(out)
            return out
        if func is torch.Tensor.__rmatmul__:
            out = func(*args, **kwargs)
            if len(args) >= 2 and _both_relevant(args[0], args[1]):
                self.counts.add("matmul")
                return _half(out)
            return out
        return func(*args, **kwargs)


    def _sequence(self, func, args, kwargs) -> tuple[bool, object]:
        """The rules only sequence models need (their decomposed attentions are also recorded)."""
        c = self.counts
        if func is F.multi_head_attention_forward:
            c.add("mha")
            return True, _mha(c, *args, **kwargs)
        if func is F.scaled_dot_product_attention:
            c.add("sdpa")
            if kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0):
                raise ValueError("AttnLRP needs the model in eval mode (attention dropout is active)")
            return True, _sdpa(c, *args, **kwargs)
        if func in (F.softmax, torch.softmax, torch.Tensor.softmax):
            out = func(*args, **kwargs)
            x = args[0]
            if isinstance(x, torch.Tensor) and x.dim() == 4 and out.requires_grad:  # eager attention
                c.add("softmax")
                if c.rules and c.conservative:
                    out = out.detach()
                c.probs.append(out)
            return True, out
        if not c.rules:
            return False, None
        if func in (torch.rsqrt, torch.Tensor.rsqrt):  # RMSNorm: the scale is a constant (identity rule)
            c.add("rsqrt")
            return True, func(*args, **kwargs).detach()
        if func is getattr(F, "rms_norm", None):
            c.add("rms_norm")
            return True, _rms_norm_const(*args, **kwargs)
        if func in (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__):
            out = func(*args, **kwargs)
            if len(args) >= 2 and _both_relevant(args[0], args[1]):  # gated MLP: uniform rule
                c.add("mul")
                return True, _half(out)
            return True, out
        return False, None


def _rms_norm_const(x: torch.Tensor, normalized_shape, weight=None, eps: float | None = None) -> torch.Tensor:
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps).detach()
    return y * weight if weight is not None else y


def identity_rule(x: torch.Tensor, y: torch.Tensor, limit: float = 0.5) -> torch.Tensor:
    """y = f(x) whose backward is AttnLRP's identity rule R_x = R_y (``limit`` = f'(0))."""
    return _identity_rule(x, y, limit)


@contextlib.contextmanager
def sequence_rules(*, rules: bool = True, conservative: bool = False, record: bool = False
                   ) -> Iterator[RuleCounts]:
    """Like ``attnlrp_rules``, for sequence models: also ``nn.MultiheadAttention`` (decomposed), RMSNorm (its scale
    ``torch.rsqrt(...)`` a constant), products of two relevant tensors (gated MLPs: uniform rule); every attention
    probability tensor (decomposed SDPA / MHA, or a softmax over a 4-D input) is kept in ``probs`` in call order.
    ``rules=False`` keeps plain gradients and only decomposes and records the attentions; ``record`` as in
    ``attnlrp_rules`` (decomposed attentions only)."""
    counts = RuleCounts(conservative=conservative, sequence=True, rules=rules, record=record)
    with _AttnLRPMode(counts):
        yield counts


@contextlib.contextmanager
def attnlrp_rules(*, conservative: bool = False, record: bool = False) -> Iterator[RuleCounts]:
    """While active, forward passes build graphs whose gradients implement AttnLRP (see the module docstring).

    ``conservative=True`` gives CP-LRP (Ali et al. 2022) instead: attention probabilities are constants, so all
    relevance flows through the values. ``record=True`` keeps each fused attention's logits and probabilities
    for ``RuleCounts.softmax_leak``.
    """
    counts = RuleCounts(conservative=conservative, record=record)
    with _AttnLRPMode(counts):
        yield counts

