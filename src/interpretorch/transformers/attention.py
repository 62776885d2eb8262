"""Attention probabilities of self-attention modules, recomputed so that fused attention does not hide them.

Fused kernels (``F.scaled_dot_product_attention``, Hugging Face's "sdpa" path, ``nn.MultiheadAttention`` with
``need_weights=False``) never materialise softmax(QK^T / sqrt(d) + mask). A forward hook on each attention
module takes the module's own inputs, recomputes the queries and keys with the module's own projections, and
recomputes the probabilities (B, heads, T, T) with the mask the module received. Nothing relies on dropout
hooks or on ``need_weights``.

With ``grad=True`` the hook also recomputes the module's output from those probabilities (A @ V, merged heads,
output projection) and hands the network ``fused.detach() + (recomputed - recomputed.detach())``: the value is
exactly the fused output, and the backward pass runs through the recomputed path, so the probabilities
receive gradients (gradient-weighted rollout needs dL/dA).

Supported modules (``attention_modules`` finds them):

* ``timm``-style attention with a packed ``qkv`` linear, ``num_heads``, optional ``q_norm`` / ``k_norm`` and a
  ``proj`` linear (the project's ``TinyViT`` attention, timm ``Attention``);
* ``torch.nn.MultiheadAttention`` (packed or separate in-projections; ``key_padding_mask``, ``attn_mask``,
  ``batch_first``);
* Hugging Face BERT-style self-attention (``query`` / ``key`` / ``value`` linears, ``num_attention_heads``;
  eager and SDPA paths; padding masks as the model builds them).

The module inputs (masks passed as keyword arguments) are needed, so the hooks come from
``interpretorch.capture.intercepted``, which hands them to the recomputation; the one context manager here
restores the model's flags on exit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.capture import intercepted, preserved_state
from interpretorch.models.layers import get_layer

KINDS = ("qkv", "mha", "bert")


def attention_kind(module: nn.Module) -> str | None:
    """Which supported attention layout ``module`` has: "qkv" (timm / TinyViT), "mha", "bert", or None."""
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") \
            and isinstance(getattr(module, "proj", None), nn.Module):
        return "qkv"
    if all(isinstance(getattr(module, n, None), nn.Linear) for n in ("query", "key", "value")) \
            and hasattr(module, "num_attention_heads"):
        return "bert"
    return None


def attention_modules(model: nn.Module) -> list[str]:
    """Dotted names of the supported self-attention modules of ``model``, in definition order."""
    return [n for n, m in model.named_modules() if n and attention_kind(m) is not None]


@dataclass
class _Parts:
    """What one call of an attention module computed: (B, H, T, D) queries, keys, values, the additive
    (B or 1, H or 1, T, S) float mask (or None), the scale, and how to turn (B, H, T, D) attention outputs into
    the module's output."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    scale: float
    finish: Callable[[torch.Tensor, Any], Any]


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A float mask to add to attention logits: bool masks (True = attend) become 0 / -inf."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.reshape(b, t, h, c // h).transpose(1, 2)


def _merge(o: torch.Tensor) -> torch.Tensor:
    b, h, t, d = o.shape
    return o.transpose(1, 2).reshape(b, t, h * d)


def _with_grad_path(fused: torch.Tensor, recomputed: torch.Tensor) -> torch.Tensor:
    """The fused value, with the gradient of the recomputed path."""
    return fused.detach() + (recomputed - recomputed.detach())


def _qkv_parts(m: nn.Module, args: tuple, kwargs: dict) -> _Parts:
    x = args[0] if args else kwargs["x"]
    b, t, c = x.shape
    h = int(m.num_heads)
    qkv = m.qkv(x).reshape(b, t, 3, h, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    if isinstance(getattr(m, "q_norm", None), nn.Module):
        q = m.q_norm(q)
    if isinstance(getattr(m, "k_norm", None), nn.Module):
        k = m.k_norm(k)
    scale = float(getattr(m, "scale", q.shape[-1] ** -0.5))
    mask = additive_mask(_arg(args, kwargs, 1, "attn_mask"), q.dtype)

    def finish(o: torch.Tensor, fused: Any) -> Any:
        y = _merge(o)
        if isinstance(getattr(m, "norm", None), nn.Module):  # timm's optional post-attention norm
            y = m.norm(y)
        y = m.proj(y)
        return _with_grad_path(fused, y)
    return _Parts(q, k, v, mask, scale, finish)


def _bert_parts(m: nn.Module, args: tuple, kwargs: dict) -> _Parts:
    x = args[0] if args else kwargs["hidden_states"]
    if kwargs.get("encoder_hidden_states") is not None:
        raise NotImplementedError("attention capture covers self-attention; got cross-attention inputs")
    if getattr(m, "is_causal", False) or getattr(getattr(m, "config", None), "is_decoder", False):
        raise NotImplementedError(f"{type(m).__name__} is a decoder (causal) attention; only encoders are covered")
    if getattr(m, "position_embedding_type", "absolute") != "absolute":
        raise NotImplementedError(f"{type(m).__name__} uses {m.position_embedding_type!r} position scores, "
                                  "which the recomputation does not include")
    h = int(m.num_attention_heads)
    q, k, v = _heads(m.query(x), h), _heads(m.key(x), h), _heads(m.value(x), h)
    scale = float(getattr(m, "scaling", q.shape[-1] ** -0.5))
    mask = additive_mask(_arg(args, kwargs, 1, "attention_mask"), q.dtype)

    def finish(o: torch.Tensor, fused: Any) -> Any:
        y = _merge(o)
        if isinstance(fused, tuple):
            return (_with_grad_path(fused[0], y),) + tuple(fused[1:])
        return _with_grad_path(fused, y)
    return _Parts(q, k, v, mask, scale, finish)


def _mha_parts(m: nn.MultiheadAttention, args: tuple, kwargs: dict) -> _Parts:
    query = _arg(args, kwargs, 0, "query")
    key = _arg(args, kwargs, 1, "key")
    value = _arg(args, kwargs, 2, "value")
    if m.bias_k is not None or m.add_zero_attn:
        raise NotImplementedError("nn.MultiheadAttention with add_bias_kv or add_zero_attn is not covered")
    if query.dim() != 3:
        raise NotImplementedError("nn.MultiheadAttention capture needs batched (3-D) inputs")
    if not m.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    e, h = m.embed_dim, m.num_heads
    if m._qkv_same_embed_dim:
        wq, wk, wv = m.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
    bq = bk = bv = None
    if m.in_proj_bias is not None:
        bq, bk, bv = m.in_proj_bias.chunk(3)
    q, k, v = (_heads(F.linear(t, w, bb), h) for t, w, bb in ((query, wq, bq), (key, wk, bk), (value, wv, bv)))
    b, s = key.shape[0], key.shape[1]
    mask = None
    kpm = _arg(args, kwargs, 3, "key_padding_mask")
    if kpm is not None:  # True (or nonzero float) = ignore, the opposite of SDPA's bool convention
        kpm = (torch.zeros(kpm.shape, dtype=q.dtype, device=q.device).masked_fill(kpm, float("-inf"))
               if kpm.dtype == torch.bool else kpm.to(q.dtype))
        mask = kpm.reshape(b, 1, 1, s)
    am = _arg(args, kwargs, 5, "attn_mask")
    if _arg(args, kwargs, 7, "is_causal", False) and am is None:
        t = q.shape[2]
        am = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(1)
    if am is not None:
        am = (torch.zeros(am.shape, dtype=q.dtype, device=q.device).masked_fill(am, float("-inf"))
              if am.dtype == torch.bool else am.to(q.dtype))
        am = am.reshape(1, 1, *am.shape[-2:]) if am.dim() == 2 else am.reshape(b, h, *am.shape[-2:])
        mask = am if mask is None else mask + am

    def finish(o: torch.Tensor, fused: Any) -> Any:
        y = F.linear(_merge(o), m.out_proj.weight, m.out_proj.bias)
        if not m.batch_first:
            y = y.transpose(0, 1)
        return (_with_grad_path(fused[0], y),) + tuple(fused[1:])
    return _Parts(q, k, v, mask, (e // h) ** -0.5, finish)


_PARTS = {"qkv": _qkv_parts, "bert": _bert_parts, "mha": _mha_parts}


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) over keys; rows whose keys are all masked become zeros, not NaN."""
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        logits = logits + mask
    probs = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(probs, nan=0.0) if mask is not None else probs


@dataclass
class AttentionRecord:
    """Attention probabilities of the hooked modules during a forward pass, in call order.

    ``probs[name]`` is (B, heads, T, S); with ``grad=True`` the tensors are in the graph of the model's output, so
    ``gradients(scores)`` gives d(sum of scores)/dA for each of them.
    """

    names: list[str]
    probs: dict[str, torch.Tensor] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.probs:
            raise RuntimeError(f"attention module {name!r} did not run during the forward pass")
        if self.calls.get(name, 0) > 1:
            raise RuntimeError(f"attention module {name!r} ran {self.calls[name]} times in one forward pass")
        return self.probs[name]

    def stacked(self) -> torch.Tensor:
        """All recorded probabilities in call order as (B, L, heads, T, T)."""
        if not self.order:
            raise RuntimeError("no attention module ran during the forward pass")
        return torch.stack([self[n] for n in self.order], dim=1)

    def gradients(self, scores: torch.Tensor, *, retain_graph: bool = False) -> torch.Tensor:
        """d(sum of scores)/dA for every recorded module, in call order, as (B, L, heads, T, T)."""
        acts = [self[n] for n in self.order]
        if not scores.requires_grad:
            raise RuntimeError("the target scores do not depend on the attention probabilities")
        grads = torch.autograd.grad(scores.sum(), acts, retain_graph=retain_graph, allow_unused=True)
        return torch.stack([torch.zeros_like(a) if g is None else g for a, g in zip(acts, grads)], dim=1)


@contextlib.contextmanager
def capture_attention(model: nn.Module, modules: Sequence[str] | None = None, *, grad: bool = False,
                      eval_mode: bool = True) -> Iterator[AttentionRecord]:
    """Record the attention probabilities of ``modules`` (dotted names; all supported ones when None).

    With ``grad=False`` the probabilities are detached and the model's outputs are untouched. With
    ``grad=True`` parameters are frozen for the duration and the probabilities are part of the graph (see the
    module docstring). Hooks, train/eval flags and ``requires_grad`` are restored on exit, also on errors.
    """
    names = attention_modules(model) if modules is None else list(modules)
    if not names:
        raise ValueError(f"{type(model).__name__} has no attention module this capture understands (timm-style "
                         "qkv attention, nn.MultiheadAttention, Hugging Face BERT self-attention); pass modules=")
    mods = [get_layer(model, n) for n in names]
    kinds = []
    for n, m in zip(names, mods):
        kind = attention_kind(m)
        if kind is None:
            raise ValueError(f"layer {n!r} ({type(m).__name__}) is not a supported attention module; "
                             f"attention modules of this model: {attention_modules(model)}")
        kinds.append(kind)
    rec = AttentionRecord(names)

    kind_of = dict(zip(names, kinds))

    def hook(name: str, m: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        kind = kind_of[name]
        rec.calls[name] = rec.calls.get(name, 0) + 1
        if name not in rec.order:
            rec.order.append(name)
        with torch.enable_grad() if grad else torch.no_grad():
            parts = _PARTS[kind](m, args, kwargs)
            probs = attention_probs(parts.q, parts.k, parts.mask, parts.scale)
            if not grad:
                rec.probs[name] = probs.detach()
                return None
            if not probs.requires_grad:  # the first attention layer when the inputs need no gradient
                probs = probs.detach().requires_grad_(True)
            rec.probs[name] = probs
            return parts.finish(torch.matmul(probs, parts.v), out)

    with preserved_state(model):
        if eval_mode:
            model.eval()
        if grad:
            for p in model.parameters():
                p.requires_grad_(False)
        try:
            with intercepted(model, names, hook), torch.enable_grad() if grad else contextlib.nullcontext():
                yield rec
        finally:
            rec.probs = {k: v.detach() for k, v in rec.probs.items()}


def attention_maps(model: nn.Module, inputs: Any, modules: Sequence[str] | None = None, *,
                   batch_size: int | None = None, **forward_kwargs: Any) -> torch.Tensor:
    """Run ``model(inputs, **forward_kwargs)`` without gradients and return (B, L, heads, T, T) probabilities.

    ``inputs`` is a tensor batch (chunked by ``batch_size``); keyword tensors with the same first dimension
    (e.g. ``attention_mask``) are chunked with it.
    """
    from interpretorch.core import chunks

    n = inputs.shape[0]
    out = []
    with capture_attention(model, modules) as rec, torch.no_grad():
        for sl in chunks(n, batch_size):
            rec.order.clear()
            rec.calls.clear()
            kw = {k: (v[sl] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == n else v)
                  for k, v in forward_kwargs.items()}
            model(inputs[sl], **kw)
            out.append(rec.stacked())
    return torch.cat(out)

