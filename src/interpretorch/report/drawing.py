"""Pictures of explanations: colormapped views, heat-maps, overlays on the images, PNG strips and the inline
Jupyter picture. Importing this module installs these as :class:`~interpretorch.explanation.Explanation`'s
display (``interpretorch`` imports it), so the result object draws without importing the report floor."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from interpretorch.explanation import (VISUALIZATIONS, Explanation, abs_grayscale, diverging, register_display,
                                       upsample)
from interpretorch.report.scales import blend

__all__ = ["render_visualization", "to_uint8_images", "overlay", "heatmap", "png_strip", "save_png"]


def render_visualization(maps: torch.Tensor, kind: str = "abs_grayscale", percentile: float = 99.0,
                         cmap: str | None = None) -> np.ndarray:
    """Render maps with a sanity-check view (``abs_grayscale``: black 0 to white; ``diverging``: blue negative,
    white 0, red positive, matplotlib's ``bwr``) as (B, H, W, 3) uint8; ``cmap`` picks another colormap."""
    if kind == "abs_grayscale":
        values = abs_grayscale(maps, percentile)
        if cmap is None:
            v = (values.cpu().numpy() * 255).round().astype(np.uint8)
            return np.repeat(v[..., None], 3, axis=-1)
        unit = values
    elif kind == "diverging":
        unit = (diverging(maps, percentile) + 1) / 2
        cmap = cmap or "bwr"
    else:
        raise ValueError(f"unknown visualisation {kind!r}; choose one of {VISUALIZATIONS}")
    import matplotlib

    colors = matplotlib.colormaps[cmap](unit.cpu().numpy())[..., :3]
    return (colors * 255).round().astype(np.uint8)


def to_uint8_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return (B, H, W, 3) uint8 images from (B, 3, H, W) floats in [0, 1] or uint8 HWC arrays."""
    if isinstance(images, torch.Tensor):
        arr = images.detach().float().cpu()
        if arr.dim() == 3:
            arr = arr[None]
        arr = arr.permute(0, 2, 3, 1).numpy()
    else:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
    if arr.dtype != np.uint8:
        arr = np.clip(arr * 255.0 if arr.max() <= 1.0 + 1e-6 else arr, 0, 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def heatmap(explanation: Explanation, cmap: str = "jet", rule: str = "abs_sum") -> np.ndarray:
    """Return the normalised maps rendered with a colormap as (B, H, W, 3) uint8."""
    import matplotlib

    colors = matplotlib.colormaps[cmap](explanation.normalized(rule).cpu().numpy())[..., :3]
    return (colors * 255).round().astype(np.uint8)


def overlay(explanation: Explanation, images: torch.Tensor | np.ndarray, cmap: str = "jet", alpha: float = 0.5,
            rule: str = "abs_sum") -> np.ndarray:
    """Blend the normalised maps over ``images`` with a matplotlib colormap; returns (B, H, W, 3) uint8."""
    import matplotlib

    imgs = to_uint8_images(images)
    if imgs.shape[0] != len(explanation):
        raise ValueError(f"overlay got {imgs.shape[0]} images for {len(explanation)} maps")
    maps = explanation.normalized(rule)
    if tuple(maps.shape[-2:]) != imgs.shape[1:3]:
        maps = upsample(maps, imgs.shape[1:3])
    colors = matplotlib.colormaps[cmap](maps.cpu().numpy())[..., :3]
    return blend(imgs, colors, alpha)


def png_strip(explanation: Explanation) -> bytes:
    """The heat-maps side by side as one PNG (the plain inline picture)."""
    from PIL import Image

    strip = np.concatenate(list(heatmap(explanation)), axis=1)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG")
    return buf.getvalue()


def save_png(explanation: Explanation, path: Any) -> None:
    """Write the first heat-map as a PNG file."""
    from PIL import Image

    Image.fromarray(heatmap(explanation)[0]).save(path)


for _name, _fn in {"overlay": overlay, "heatmap": heatmap, "visualize": render_visualization, "png": png_strip,
                   "save_png": save_png}.items():
    register_display(_name, _fn)
