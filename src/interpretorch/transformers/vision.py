"""Transformer explanations for images: raw attention, rollout, gradient-weighted rollout, AttnLRP, token Grad-CAM.

Every method has the project's signature ``fn(model, inputs, target="top1", *, batch_size=None, **options) ->
Explanation`` and returns region maps (B, H, W) at the input's resolution, with the patch-grid maps (B, h, w)
in ``raw`` (AttnLRP's map is per pixel: the relevance of the input summed over colour channels). Tokens are
laid out as ``prefix_tokens`` class / register tokens followed by a square grid of patches (row-major), as in
ViT / timm / the project's ``TinyViT`` (whose ``grid`` attribute is used when present).
"""
from __future__ import annotations

import dataclasses

import math
from typing import Callable

import torch
from torch import nn

from interpretorch.capture import capture
from interpretorch.core import check_inputs
from interpretorch.core.batching import chunks, rows_per_pass
from interpretorch.core.targets import Target, check_finite, check_target, split_target, target_indices, target_scores
from interpretorch.explanation import Explanation, upsample
from interpretorch.models.layers import get_layer
from interpretorch.transformers.attention import attention_modules, capture_attention
from interpretorch.transformers.lrp import attnlrp_rules
from interpretorch.transformers.rollout import (fuse_heads, gradient_rollout_matrix, readout, rollout_matrix)


def patch_grid(model: nn.Module, n_tokens: int, prefix_tokens: int = 1) -> tuple[int, int]:
    """The (h, w) patch grid of ``n_tokens`` tokens: the model's ``grid`` attribute, else a square."""
    n = n_tokens - prefix_tokens
    grid = getattr(model, "grid", None)
    if grid is not None and grid[0] * grid[1] == n:
        return int(grid[0]), int(grid[1])
    side = math.isqrt(max(n, 0))
    if n <= 0 or side * side != n:
        raise ValueError(f"{n_tokens} tokens minus {prefix_tokens} prefix token(s) do not form a square patch "
                         "grid; set prefix_tokens= to the number of class / register tokens")
    return side, side


def _to_region(scores: torch.Tensor, model: nn.Module, prefix_tokens: int, size: tuple[int, int]
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) token scores -> ((B, H, W) maps at the image size, (B, h, w) patch maps)."""
    h, w = patch_grid(model, scores.shape[1], prefix_tokens)
    raw = scores[:, prefix_tokens:].reshape(-1, h, w)
    return upsample(raw, size), raw


def _run(model: nn.Module, inputs: torch.Tensor, target: Target, batch_size: int | None,
         per_chunk: Callable[[torch.Tensor, object], tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]],
         ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    x = check_inputs(model, inputs)
    n = x.shape[0]
    target = check_target(target, n)
    maps, idx_all, scores = [], [], []
    for sl in chunks(n, rows_per_pass(batch_size, x.device)):
        m, idx, s = per_chunk(x[sl], split_target(target, sl))
        maps.append(m)
        scores.append(s)
        if idx is not None:
            idx_all.append(idx)
    return x, torch.cat(maps), (torch.cat(idx_all) if idx_all else None), torch.cat(scores)


def _attention_pass(model: nn.Module, rows: torch.Tensor, t: Target, grad: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    with capture_attention(model, grad=grad) as rec:
        out = model(rows)
        check_finite(out)
        idx = target_indices(out, t)
        s = target_scores(out, t, idx)
        grads = rec.gradients(s) if grad else None
        attn = rec.stacked().detach()
    return attn, idx, s.detach(), grads


def raw_attention(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, layer_index: int = -1,
                  head_fusion: str = "mean", prefix_tokens: int = 1, batch_size: int | None = None) -> Explanation:
    """The class token's attention to the patches in one layer (the last by default), heads fused."""
    def chunk(rows, t):
        attn, idx, s, _ = _attention_pass(model, rows, t, False)
        return fuse_heads(attn[:, layer_index], head_fusion)[:, 0], idx, s
    x, tok, idx, scores = _run(model, inputs, target, batch_size, chunk)
    maps, raw = _to_region(tok, model, prefix_tokens, tuple(x.shape[-2:]))
    return Explanation(maps, "attention", idx, None, raw, scores, {"layer_index": layer_index})


def attention_rollout(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, head_fusion: str = "mean",
                      discard_ratio: float = 0.0, start_layer: int = 0, readout_token: str = "cls",
                      prefix_tokens: int = 1, batch_size: int | None = None) -> Explanation:
    """Attention rollout (Abnar & Zuidema 2020) read out at the class token (class-agnostic: ``target`` only
    labels the result)."""
    def chunk(rows, t):
        attn, idx, s, _ = _attention_pass(model, rows, t, False)
        r = rollout_matrix(attn, head_fusion=head_fusion, discard_ratio=discard_ratio, start_layer=start_layer,
                           protected=prefix_tokens)
        return readout(r, readout_token), idx, s
    x, tok, idx, scores = _run(model, inputs, target, batch_size, chunk)
    maps, raw = _to_region(tok, model, prefix_tokens, tuple(x.shape[-2:]))
    return Explanation(maps, "rollout", idx, None, raw, scores,
                       {"head_fusion": head_fusion, "discard_ratio": discard_ratio, "start_layer": start_layer})


def gradient_rollout(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, start_layer: int = 0,
                     readout_token: str = "cls", prefix_tokens: int = 1, batch_size: int | None = None
                     ) -> Explanation:
    """Gradient-weighted attention rollout (Chefer et al. 2021, LRP-free rule) for the target class."""
    def chunk(rows, t):
        attn, idx, s, grads = _attention_pass(model, rows, t, True)
        r = gradient_rollout_matrix(attn, grads, start_layer=start_layer)
        return readout(r, readout_token), idx, s
    x, tok, idx, scores = _run(model, inputs, target, batch_size, chunk)
    maps, raw = _to_region(tok, model, prefix_tokens, tuple(x.shape[-2:]))
    return Explanation(maps, "gradient_rollout", idx, None, raw, scores, {"start_layer": start_layer})


def attnlrp(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, batch_size: int | None = None
            ) -> Explanation:
    """AttnLRP (Achtibat et al. 2024): relevance of each input pixel (summed over channels), one forward and one
    modified backward pass; ``raw`` holds the (B, C, H, W) relevance."""
    def chunk(rows, t):
        rows = rows.clone().requires_grad_(True)
        with capture(model, []):
            with attnlrp_rules() as counts:
                out = model(rows)
            check_finite(out)
            idx = target_indices(out, t)
            s = target_scores(out, t, idx)
            (g,) = torch.autograd.grad(s.sum(), rows)
        if not counts.counts:
            raise ValueError(f"AttnLRP reached no LayerNorm, GELU or attention product of {type(model).__name__}; "
                             "is it a transformer run in Python?")
        return (rows * g).detach(), idx, s.detach()
    x, rel, idx, scores = _run(model, inputs, target, batch_size, chunk)
    return Explanation(rel.sum(1), "attnlrp", idx, None, rel, scores)


def default_token_layer(model: nn.Module) -> str:
    """The input of the last attention: the ``norm1`` of the block holding the last attention module (Grad-CAM on
    the last block's output sees no gradient at the patches of a class-token model)."""
    names = attention_modules(model)
    if not names:
        raise ValueError("no attention module found; pass layer= (a module giving (B, T, C) tokens)")
    parent = names[-1].rpartition(".")[0]
    for cand in (f"{parent}.norm1", f"{parent}.norm_1", f"{parent}.layernorm_before"):
        try:
            get_layer(model, cand)
            return cand
        except KeyError:
            continue
    raise ValueError(f"could not find the normalisation before {names[-1]!r}; pass layer=")


def token_gradcam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", layer: str | None = None, *,
                  prefix_tokens: int = 1, batch_size: int | None = None) -> Explanation:
    """Grad-CAM on transformer tokens: the patch tokens of ``layer`` (B, T, C) laid out on their grid, channel
    weights = mean gradient over patches, map = ReLU(sum of weighted channels)."""
    from interpretorch.attribution.cam import layer_cams

    name = layer or default_token_layer(model)
    e = layer_cams(model, inputs, "gradcam", target, name, batch_size=batch_size, prefix_tokens=prefix_tokens)
    return dataclasses.replace(e["gradcam"], method="token_gradcam")
