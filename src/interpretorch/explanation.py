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


VISUALIZATIONS = ("abs_grayscale", "diverging")


def _percentile_per_image(values: torch.Tensor, percentile: float) -> torch.Tensor:
    """The ``percentile`` (0-100, linear interpolation as numpy) of each (H, W) map of a (B, H, W) batch."""
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    flat = values.reshape(values.shape[0], -1).double()
    return torch.quantile(flat, percentile / 100.0, dim=1).to(values.dtype)


def abs_grayscale(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """The "absolute grayscale" view of Adebayo et al. 2018: the sum over channels of |attribution|, scaled per
    image from its minimum (0) to its ``percentile``-th percentile (1) and clipped there; (B, H, W) in [0, 1].

    (B, H, W) maps use their absolute values. Clipping at the 99th percentile keeps a few extreme pixels from
    washing out the rest of the map.
    """
    a = maps.detach().abs()
    if a.dim() == 4:
        a = a.sum(1)
    a = a.double()
    lo = a.reshape(a.shape[0], -1).amin(1)
    hi = _percentile_per_image(a, percentile)
    hi = torch.where(hi > lo, hi, a.reshape(a.shape[0], -1).amax(1))  # a sparse map: fall back to the maximum
    span = (hi - lo).clamp_min(torch.finfo(torch.float64).tiny)
    out = ((a - lo[:, None, None]) / span[:, None, None]).clamp(0, 1)
    return torch.where((hi > lo)[:, None, None], out, torch.zeros_like(out)).to(torch.float32)


def diverging(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """The "diverging" view of Adebayo et al. 2018: the signed sum over channels, divided per image by the
    ``percentile``-th percentile of its absolute value and clipped; (B, H, W) in [-1, 1] with 0 kept at 0.

    The span comes from |sum| (the saliency library takes the percentile of the signed sum, which shrinks the
    span of maps that are mostly negative); positive and negative evidence get the same scale.
    """
    s = maps.detach()
    if s.dim() == 4:
        s = s.sum(1)
    s = s.double()
    span = _percentile_per_image(s.abs(), percentile)
    span = torch.where(span > 0, span, s.reshape(s.shape[0], -1).abs().amax(1))
    out = (s / span.clamp_min(torch.finfo(torch.float64).tiny)[:, None, None]).clamp(-1, 1)
    return torch.where((span > 0)[:, None, None], out, torch.zeros_like(out)).to(torch.float32)


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
    (or None for a callable target), ``scores`` the explained output per image, and ``outputs`` the
    model's outputs on the unperturbed images when the method computed them anyway (so a caller gets the
    predictions without another forward pass).
    """

    maps: torch.Tensor
    method: str
    target: torch.Tensor | None = None
    layer: str | None = None
    raw: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    outputs: torch.Tensor | None = None

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

    def visualize(self, kind: str = "abs_grayscale", percentile: float = 99.0,
                  cmap: str | None = None) -> np.ndarray:
        """Render the maps as the sanity-check paper does: ``abs_grayscale`` or ``diverging``, clipped at the
        ``percentile``-th percentile; returns (B, H, W, 3) uint8."""
        return render_visualization(self.maps, kind, percentile, cmap)

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

    def _repr_html_(self) -> str:
        """The maps inline in Jupyter, each with its colour bar and raw min / max."""
        from interpretorch.report.notebook import explanation_html

        return explanation_html(self)

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


class ExplanationGrid:
    """Several explanations shown together in Jupyter: one row per image, one column per method."""

    def __init__(self, explanations: dict[str, "Explanation"], images: torch.Tensor | np.ndarray | None = None,
                 shared_scale: bool = False) -> None:
        if not explanations or not all(isinstance(e, Explanation) for e in explanations.values()):
            raise TypeError("grid() takes a non-empty dict {method name: Explanation}")
        self.explanations = dict(explanations)
        self.images = images
        self.shared_scale = shared_scale

    def _repr_html_(self) -> str:
        from interpretorch.report.notebook import grid_html

        return grid_html(self.explanations, self.images, self.shared_scale)

    def __repr__(self) -> str:
        return f"ExplanationGrid(methods={list(self.explanations)})"


def grid(explanations: dict[str, Explanation], images: torch.Tensor | np.ndarray | None = None,
         shared_scale: bool = False) -> ExplanationGrid:
    """A dict of explanations (what ``explain(..., [methods])`` returns) as a grid that renders inline in Jupyter;
    region maps are drawn over ``images`` ((B, 3, H, W) in [0, 1]) when given."""
    return ExplanationGrid(explanations, images, shared_scale)
