"""Feature masks for the feature-based attributions (Shapley sampling, feature ablation / permutation, KernelSHAP,
LIME): which pixels move together. SLIC superpixels of each image, a regular grid, or the user's own masks."""
from __future__ import annotations

import numpy as np
import torch

FEATURE_MASKS = ("slic", "grid")


def slic_masks(x: torch.Tensor, n_segments: int = 50, compactness: float = 10.0) -> torch.Tensor:
    """SLIC superpixels (Achanta et al. 2012, scikit-image) of each image of a (B, C, H, W) batch: (B, 1, H, W) long
    labels 0..F-1; each image is min-max scaled to [0, 1] first, so normalised inputs segment as the photos do."""
    from skimage.segmentation import slic

    if n_segments < 1:
        raise ValueError(f"n_segments must be >= 1, got {n_segments}")
    out = []
    for img in x.detach().cpu().double():
        lo, hi = img.min(), img.max()
        a = ((img - lo) / (hi - lo) if hi > lo else torch.zeros_like(img)).numpy()
        if a.shape[0] == 1:
            labels = slic(a[0], n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=None)
        else:
            labels = slic(np.moveaxis(a, 0, -1), n_segments=n_segments, compactness=compactness, start_label=0,
                          channel_axis=-1)
        out.append(torch.from_numpy(np.asarray(labels, dtype=np.int64)))
    return _renumber(torch.stack(out)[:, None].to(x.device))


def grid_masks(x: torch.Tensor, cell: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A grid of ``cell`` x ``cell`` pixel squares (default: 1/8 of the shorter side), numbered row by row:
    (1, 1, H, W) long, the same for every image."""
    h, w = x.shape[-2:]
    if cell is None:
        cell = max(1, min(h, w) // 8)
    ch, cw = (cell, cell) if isinstance(cell, int) else tuple(cell)
    if not (isinstance(ch, int) and isinstance(cw, int) and ch >= 1 and cw >= 1):
        raise ValueError(f"cell must be a positive int or a pair of them, got {cell!r}")
    rows = torch.arange(h, device=x.device) // ch
    cols = torch.arange(w, device=x.device) // cw
    ncols = int(cols[-1]) + 1
    return (rows[:, None] * ncols + cols[None, :])[None, None]


def _renumber(m: torch.Tensor) -> torch.Tensor:
    """Each image's labels renumbered 0..F-1 in increasing order (labels that never occur are dropped)."""
    out = torch.empty_like(m)
    for i in range(m.shape[0]):
        _, inv = torch.unique(m[i], return_inverse=True)
        out[i] = inv.reshape(m[i].shape)
    return out


def feature_masks(x: torch.Tensor, features: str | torch.Tensor = "slic", *, n_segments: int = 50,
                  compactness: float = 10.0, cell: int | tuple[int, int] | None = None) -> torch.Tensor:
    """The feature of every input value: (B or 1, 1 or C, H, W) long labels 0..F-1 per image.

    ``features``: "slic" (superpixels of each image), "grid" (squares of ``cell`` pixels) or a tensor of integer
    labels shaped (H, W), (B or 1, H, W) or (B or 1, C or 1, H, W); labels are renumbered 0..F-1 per image in
    increasing order.
    """
    if isinstance(features, str):
        if features == "slic":
            return slic_masks(x, n_segments, compactness)
        if features == "grid":
            return grid_masks(x, cell)
        raise ValueError(f"unknown features {features!r}; choose one of {FEATURE_MASKS} or give a label tensor")
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be 'slic', 'grid' or a tensor of labels, got {type(features).__name__}")
    m = features.detach()
    if m.is_floating_point() or m.dtype == torch.bool or m.is_complex():
        raise TypeError(f"a feature mask holds integer labels, got a {m.dtype} tensor")
    b, c, h, w = x.shape
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    ok = m.dim() == 4 and tuple(m.shape[-2:]) == (h, w) and m.shape[0] in (1, b) and m.shape[1] in (1, c)
    if not ok:
        raise ValueError(f"a feature mask must have shape (H, W), (B or 1, H, W) or (B or 1, C or 1, H, W) for "
                         f"inputs {tuple(x.shape)}, got {tuple(features.shape)}")
    if m.numel() and int(m.min()) < 0:
        raise ValueError("feature labels must be >= 0")
    return _renumber(m.long().to(x.device))


def n_features(masks: torch.Tensor, b: int) -> torch.Tensor:
    """The number of features of each of ``b`` images: (b,) long."""
    return (masks.flatten(1).amax(1) + 1).expand(b).clone() if masks.shape[0] == 1 else masks.flatten(1).amax(1) + 1


def expand_masks(masks: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``masks`` broadcast to the shape of ``x`` (B, C, H, W)."""
    return masks.expand(x.shape[0], x.shape[1], -1, -1)
