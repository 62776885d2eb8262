"""Attention rollout and gradient-weighted relevance for sequence models: encoder self-attention, causal decoder
self-attention and the decoder's cross-attention to the encoder.

The attentions of one forward pass come as a list of ``(kind, A)`` in call order, ``kind`` one of ``"enc"``
(encoder self-attention, (B, S, S)), ``"self"`` (decoder self-attention, (B, T, T)) and ``"cross"`` (decoder
queries on encoder keys, (B, T, S)), each already reduced over heads. Both functions return ``(R_qs, R_qq)``:
the decoder tokens' relevance on the source tokens (B, T, S) and on the decoder tokens (B, T, T); a
decoder-only model has no ``"enc"`` / ``"cross"`` entries and S = 0.

* ``seq_rollout`` (Abnar & Zuidema 2020, extended): each token's state is a distribution over the input tokens.
  A self-attention layer mixes it as rollout does, R <- norm(0.5 A + 0.5 I) R (rows renormalised to 1); a
  cross-attention layer adds the encoder's output half and half to the residual, [R_qs R_qq] <- 0.5 [R_qs R_qq]
  + 0.5 A [R_ss 0], with R_ss the encoder's own rollout. Every row sums to 1.
* ``seq_gradient_rollout`` (Chefer, Gur & Wolf 2021b, "Generic attention-model explainability", rules (6), (7),
  (10) and (11)): with A_bar = E_h[(grad A * A)^+] (``gradient_heads``), R_ss = I, R_qq = I, R_qs = 0, an
  encoder layer does R_ss += A_bar R_ss; a decoder self-attention layer R_qq += A_bar R_qq and R_qs += A_bar R_qs;
  a cross-attention layer R_qs += norm(R_qq)^T A_bar norm(R_ss), where norm(R) = (R - I) with rows rescaled to
  sum to 1, plus I (the normalisation of self-attention maps, as the authors' ``handle_residual``; a row of
  R - I that sums to 0 stays 0 rather than becoming NaN).
"""
from __future__ import annotations

from typing import Sequence

import torch

KINDS = ("enc", "self", "cross")


def _eye(b: int, n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=like.dtype, device=like.device).expand(b, n, n).clone()


def _rows_to_one(a: torch.Tensor) -> torch.Tensor:
    s = a.sum(-1, keepdim=True)
    return torch.where(s > 0, a / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(a))


def _check(layers: Sequence[tuple[str, torch.Tensor]]) -> tuple[int, int, int, torch.Tensor]:
    if not layers:
        raise ValueError("no attention layer ran in the forward pass")
    bad = [k for k, _ in layers if k not in KINDS]
    if bad:
        raise ValueError(f"unknown attention kind(s) {bad}; choose from {KINDS}")
    ref = layers[0][1]
    b = ref.shape[0]
    s = next((a.shape[-1] for k, a in layers if k == "enc"), 0)
    t = next((a.shape[-2] for k, a in layers if k != "enc"), None)
    if t is None:
        raise ValueError("no decoder attention layer ran in the forward pass")
    for k, a in layers:
        want = {"enc": (b, s, s), "self": (b, t, t), "cross": (b, t, s)}[k]
        if tuple(a.shape) != want:
            raise ValueError(f"a {k!r} attention of shape {tuple(a.shape)} does not fit (expected {want})")
    return b, s, t, ref


def gradient_heads(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s head average E_h[(grad * A)^+] of (B, heads, T, S) attention and its gradient: (B, T, S)."""
    return (grad * attn).clamp_min(0).mean(1)


def seq_rollout(layers: Sequence[tuple[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rollout of head-averaged attentions ``[(kind, A)]`` in call order: (R_qs (B, T, S), R_qq (B, T, T)),
    rows summing to 1."""
    b, s, t, ref = _check(layers)
    r_ss = _eye(b, s, ref)
    r_d = torch.cat([torch.zeros(b, t, s, dtype=ref.dtype, device=ref.device), _eye(b, t, ref)], -1)
    for kind, a in layers:
        if kind == "enc":
            r_ss = _rows_to_one(0.5 * a + 0.5 * _eye(b, s, ref)) @ r_ss
        elif kind == "self":
            r_d = _rows_to_one(0.5 * a + 0.5 * _eye(b, t, ref)) @ r_d
        else:
            enc = torch.cat([r_ss, torch.zeros(b, s, t, dtype=ref.dtype, device=ref.device)], -1)
            r_d = 0.5 * r_d + 0.5 * (_rows_to_one(a) @ enc)
    return r_d[..., :s], r_d[..., s:]


def normalise_self(r: torch.Tensor) -> torch.Tensor:
    """Chefer et al. 2021b's normalisation of a self-attention relevance map: (R - I) with rows summing to 1,
    plus I."""
    eye = _eye(r.shape[0], r.shape[-1], r)
    return _rows_to_one(r - eye) + eye


def seq_gradient_rollout(layers: Sequence[tuple[str, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Chefer et al. 2021b's relevance from gradient-weighted, head-averaged attentions ``[(kind, A_bar)]`` in
    call order: (R_qs (B, T, S), R_qq (B, T, T))."""
    b, s, t, ref = _check(layers)
    r_ss, r_qq = _eye(b, s, ref), _eye(b, t, ref)
    r_qs = torch.zeros(b, t, s, dtype=ref.dtype, device=ref.device)
    for kind, a in layers:
        if kind == "enc":
            r_ss = r_ss + a @ r_ss
        elif kind == "self":
            r_qs = r_qs + a @ r_qs
            r_qq = r_qq + a @ r_qq
        else:
            r_qs = r_qs + normalise_self(r_qq).transpose(1, 2) @ a @ normalise_self(r_ss)
    return r_qs, r_qq
