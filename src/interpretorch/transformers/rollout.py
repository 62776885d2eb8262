"""Attention rollout (Abnar & Zuidema 2020) and gradient-weighted attention rollout (Chefer et al. 2021).

Both take attention probabilities (B, L, heads, T, T) in layer order and give a (B, T, T) matrix whose row t
says how much each input token contributes to token t after the chosen layers; ``readout`` turns it into one
score per input token: the row of the class token (``"cls"``, token 0) or the mean of the rows of the valid
tokens (``"mean"``, for mean-pooled models such as sentence embedders).

* ``rollout``: per layer fuse the heads (mean, max or min), zero the smallest ``discard_ratio`` of the fused
  weights (never a weight to or from the class token), add the identity for the residual connection, renormalise
  each row to sum to 1, and multiply the layers: R = A_L ... A_start.
* ``gradient_rollout`` (Chefer et al. 2021, "Generic Attention-model Explainability", the LRP-free rule):
  R = I, then per layer A_bar = mean over heads of (dL/dA * A)^+ and R <- R + A_bar R.
"""
from __future__ import annotations

import torch

HEAD_FUSIONS = ("mean", "max", "min")
READOUTS = ("cls", "mean")


def fuse_heads(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Reduce the heads dimension (-3) of (..., heads, T, T) attention by mean, max or min."""
    if head_fusion == "mean":
        return attn.mean(-3)
    if head_fusion == "max":
        return attn.amax(-3)
    if head_fusion == "min":
        return attn.amin(-3)
    raise ValueError(f"unknown head fusion {head_fusion!r}; choose one of {HEAD_FUSIONS}")


def _check(attn: torch.Tensor, start_layer: int) -> None:
    if attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be (B, layers, heads, T, T), got shape {tuple(attn.shape)}")
    n_layers = attn.shape[1]
    if not -n_layers <= start_layer < n_layers:
        raise ValueError(f"start_layer {start_layer} is out of range for {n_layers} layers")


def discard_lowest(fused: torch.Tensor, ratio: float, protected: int = 1) -> torch.Tensor:
    """Zero the smallest ``ratio`` of the weights of each (B, T, T) matrix, never those in the first ``protected``
    rows or columns (the class token's)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {ratio}")
    if ratio == 0.0:
        return fused
    b, t, _ = fused.shape
    keep = torch.ones(t, t, dtype=torch.bool, device=fused.device)
    keep[protected:, protected:] = False  # the entries that may be discarded
    cand = fused[:, ~keep]  # (B, n_candidates)
    k = int(cand.shape[1] * ratio)
    if k == 0:
        return fused
    low = cand.topk(k, dim=1, largest=False).indices
    cand = cand.scatter(1, low, 0.0)
    out = fused.clone()
    out[:, ~keep] = cand
    return out


def rollout_matrix(attn: torch.Tensor, *, head_fusion: str = "mean", discard_ratio: float = 0.0,
                   start_layer: int = 0, residual: bool = True, protected: int = 1) -> torch.Tensor:
    """Attention rollout of (B, L, heads, T, T) probabilities from ``start_layer`` on; (B, T, T), rows sum to 1."""
    _check(attn, start_layer)
    b, n_layers, _, t, _ = attn.shape
    eye = torch.eye(t, dtype=attn.dtype, device=attn.device)
    result = eye.expand(b, t, t).clone()
    for layer in range(start_layer % n_layers, n_layers):
        a = discard_lowest(fuse_heads(attn[:, layer], head_fusion), discard_ratio, protected)
        if residual:
            a = 0.5 * a + 0.5 * eye
        a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
        result = torch.matmul(a, result)
    return result


def gradient_rollout_matrix(attn: torch.Tensor, grads: torch.Tensor, *, start_layer: int = 0) -> torch.Tensor:
    """Chefer et al. 2021 relevance of (B, L, heads, T, T) probabilities and their gradients: (B, T, T)."""
    _check(attn, start_layer)
    if grads.shape != attn.shape:
        raise ValueError(f"gradients {tuple(grads.shape)} do not match attention {tuple(attn.shape)}")
    b, n_layers, _, t, _ = attn.shape
    r = torch.eye(t, dtype=attn.dtype, device=attn.device).expand(b, t, t).clone()
    for layer in range(start_layer % n_layers, n_layers):
        a_bar = (grads[:, layer] * attn[:, layer]).clamp_min(0).mean(1)
        r = r + torch.matmul(a_bar, r)
    return r


def readout(matrix: torch.Tensor, how: str = "cls", valid: torch.Tensor | None = None) -> torch.Tensor:
    """One score per input token (B, T) from a (B, T, T) rollout: the class token's row, or the mean of the rows
    of the ``valid`` tokens (B, T) bool (all when None)."""
    if how == "cls":
        return matrix[:, 0]
    if how == "mean":
        if valid is None:
            return matrix.mean(1)
        w = valid.to(matrix.dtype)
        return (w[:, :, None] * matrix).sum(1) / w.sum(1, keepdim=True).clamp_min(1)
    raise ValueError(f"unknown readout {how!r}; choose one of {READOUTS}")
