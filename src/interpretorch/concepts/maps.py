"""Concept maps: where in an image a concept is, as the layer's spatial activations projected on a CAV.

For a CAV ``v`` trained on flattened activations (C x h x w features) the projection ``v . a`` of an image's
activation ``a`` splits exactly into one term per position, ``m[y, x] = sum_c v[c, y, x] a[c, y, x]``; for a
CAV on channel means (C features) ``m[y, x] = v . a[:, y, x] / (h w)``. Either way the map sums to the
projection, and is upsampled bilinearly to the input size like a CAM.
"""
from __future__ import annotations

import torch
from torch import nn

from interpretorch.concepts.cache import compute_activations
from interpretorch.core import check_inputs
from interpretorch.explanation import Explanation, upsample


def project_maps(acts: torch.Tensor, vectors: torch.Tensor, features: str = "flatten") -> torch.Tensor:
    """(B, P, h, w) per-position contributions of (B, C, h, w) activations to their projections on P CAVs."""
    if acts.dim() != 4:
        raise ValueError(f"concept maps need (B, C, h, w) activations, got shape {tuple(acts.shape)}")
    b, c, h, w = acts.shape
    vectors = vectors.to(acts.device, acts.dtype)
    if features == "flatten":
        if vectors.shape[1] != c * h * w:
            raise ValueError(f"CAVs have {vectors.shape[1]} features, the layer gives {c}x{h}x{w}={c * h * w}")
        return torch.einsum("pchw,bchw->bphw", vectors.reshape(-1, c, h, w), acts)
    if features == "mean":
        if vectors.shape[1] != c:
            raise ValueError(f"channel-mean CAVs have {vectors.shape[1]} features, the layer has {c} channels")
        return torch.einsum("pc,bchw->bphw", vectors, acts) / (h * w)
    raise ValueError(f"unknown features {features!r}")


def concept_maps(model: nn.Module, inputs: torch.Tensor, vectors: torch.Tensor, layer: str, *,
                 features: str = "flatten", batch_size: int | None = None, size: tuple[int, int] | None = None
                 ) -> torch.Tensor:
    """(B, P, H, W) concept maps of ``inputs`` for P CAVs at ``layer``, upsampled to the input size."""
    x = check_inputs(model, inputs)
    if vectors.dim() == 1:
        vectors = vectors[None]
    acts = compute_activations(model, x, [layer], batch_size=batch_size)[layer]
    maps = project_maps(acts, vectors, features)
    size = size or tuple(x.shape[-2:])
    b, p, h, w = maps.shape
    return upsample(maps.reshape(b * p, h, w), size).reshape(b, p, *size)


def concept_map(model: nn.Module, inputs: torch.Tensor, target=None, layer: str | None = None, *,
                cav: torch.Tensor, features: str = "flatten", batch_size: int | None = None) -> Explanation:
    """The concept map of one CAV as an Explanation (region maps (B, H, W); ``raw`` at layer resolution)."""
    if layer is None:
        raise ValueError("a concept map needs the layer its CAV was trained at (layer=...)")
    if cav.dim() != 1:
        raise ValueError(f"cav must be one (D,) vector, got shape {tuple(cav.shape)}")
    x = check_inputs(model, inputs)
    acts = compute_activations(model, x, [layer], batch_size=batch_size)[layer]
    raw = project_maps(acts, cav[None], features)[:, 0]
    return Explanation(upsample(raw, tuple(x.shape[-2:])), "concept_map", None, layer, raw,
                       raw.flatten(1).sum(1), {"features": features})
