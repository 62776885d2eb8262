"""The result every method returns: maps, what they explain, and how to look at them."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

REDUCTIONS = ("abs_sum", "sum", "max_abs")


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max scale each map of a (B, ...) batch to [0, 1]; constant maps become zeros."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > eps, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (B, h, w) maps to (B, H, W)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def reduce_channels(maps: torch.Tensor, rule: str = "abs_sum") -> torch.Tensor:
    """Reduce (B, C, H, W) pixel attributions to (B, H, W) by a named rule: abs_sum, sum or max_abs."""
    if maps.dim() == 3:
        return maps
    if rule == "abs_sum":
        return maps.abs().sum(1)
    if rule == "sum":
        return maps.sum(1)
    if rule == "max_abs":
        return maps.abs().amax(1)
    raise ValueError(f"unknown channel reduction {rule!r}; choose one of {REDUCTIONS}")


def _to_uint8_images(images: torch.Tensor | np.ndarray) -> np.ndarray:
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


@dataclass
class Explanation:
    """Maps produced by one method for a batch, with what they explain.

    ``maps`` is (B, H, W) at input resolution, or (B, C, H, W) for pixel attributions; ``raw`` keeps
    the layer-resolution maps of layer methods. ``target`` holds the explained class per image
    (or None for a callable target), ``scores`` the explained output per image.
    """

    maps: torch.Tensor
    method: str
    target: torch.Tensor | None = None
    layer: str | None = None
    raw: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def map2d(self, rule: str = "abs_sum") -> torch.Tensor:
        """Return (B, H, W) maps, reducing a channel dimension with ``rule`` when present."""
        return reduce_channels(self.maps, rule)

    def normalized(self, rule: str = "abs_sum", clip_percentile: float | None = None) -> torch.Tensor:
        """Return (B, H, W) maps scaled to [0, 1] per image, optionally clipped at a percentile first."""
        m = self.map2d(rule).float()
        if clip_percentile is not None:
            flat = m.reshape(m.shape[0], -1)
            hi = torch.quantile(flat, clip_percentile / 100.0, dim=1)
            m = torch.minimum(m, hi[:, None, None])
        return normalize_maps(m)

    def overlay(self, images: torch.Tensor | np.ndarray, cmap: str = "jet", alpha: float = 0.5,
                rule: str = "abs_sum") -> np.ndarray:
        """Blend the normalised maps over ``images`` with a matplotlib colormap; returns (B, H, W, 3) uint8."""
        import matplotlib

        imgs = _to_uint8_images(images)
        if imgs.shape[0] != len(self):
            raise ValueError(f"overlay got {imgs.shape[0]} images for {len(self)} maps")
        maps = self.normalized(rule)
        if tuple(maps.shape[-2:]) != imgs.shape[1:3]:
            maps = upsample(maps, imgs.shape[1:3])
        colors = matplotlib.colormaps[cmap](maps.cpu().numpy())[..., :3]
        out = (1 - alpha) * imgs.astype(np.float32) / 255.0 + alpha * colors
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)

    def heatmap(self, cmap: str = "jet", rule: str = "abs_sum") -> np.ndarray:
        """Return the normalised maps rendered with a colormap as (B, H, W, 3) uint8."""
        import matplotlib

        colors = matplotlib.colormaps[cmap](self.normalized(rule).cpu().numpy())[..., :3]
        return (colors * 255).round().astype(np.uint8)

    def save(self, path: str | Path) -> Path:
        """Write the explanation: ``.pt`` keeps tensors and metadata, ``.png`` the first heatmap."""
        path = Path(path)
        if path.suffix == ".png":
            from PIL import Image

            Image.fromarray(self.heatmap()[0]).save(path)
        elif path.suffix == ".pt":
            torch.save({"maps": self.maps.cpu(), "raw": None if self.raw is None else self.raw.cpu(),
                        "method": self.method, "layer": self.layer,
                        "target": None if self.target is None else self.target.cpu(),
                        "scores": None if self.scores is None else self.scores.cpu()}, path)
        else:
            raise ValueError(f"cannot save an explanation as {path.suffix!r}; use .pt or .png")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Explanation":
        """Read an explanation written by ``save(... .pt)``."""
        d = torch.load(path, weights_only=True)
        return cls(**d)

    def _repr_png_(self) -> bytes:
        from PIL import Image

        tiles = self.heatmap()
        strip = np.concatenate(list(tiles), axis=1)
        buf = io.BytesIO()
        Image.fromarray(strip).save(buf, format="PNG")
        return buf.getvalue()

    def __repr__(self) -> str:
        return (f"Explanation(method={self.method!r}, maps={tuple(self.maps.shape)}, layer={self.layer!r}, "
                f"target={None if self.target is None else self.target.tolist()})")
