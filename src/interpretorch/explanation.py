"""The result every method returns: maps and what they explain, with the numeric views of them (channel
reductions, normalisation, the sanity-check paper's views).

Pictures are the report floor's: :mod:`interpretorch.report.drawing` and :mod:`interpretorch.report.notebook`
install the drawing and the Jupyter display with :func:`register_display`; they are plugins
(:mod:`interpretorch.core.plugins`), loaded the first time a picture is asked for, so this module imports nothing
above the ground floor.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from interpretorch.core.plugins import load_plugins

REDUCTIONS = ("abs_sum", "sum", "max_abs")
DISPLAY_HOOKS = ("overlay", "heatmap", "visualize", "png", "save_png", "html")
_display: dict[str, Callable[..., Any]] = {}


def register_display(name: str, fn: Callable[..., Any]) -> None:
    """Install the function that draws one kind of picture (one of ``DISPLAY_HOOKS``) for every Explanation."""
    if name not in DISPLAY_HOOKS:
        raise ValueError(f"unknown display {name!r}; choose one of {DISPLAY_HOOKS}")
    if not callable(fn):
        raise TypeError(f"display {name!r} must be callable, got {type(fn).__name__}")
    _display[name] = fn


def display_hook(name: str) -> Callable[..., Any]:
    """The installed function drawing pictures of kind ``name`` (installed by the report floor's plugin)."""
    if name not in _display:
        load_plugins()
    if name not in _display:
        raise RuntimeError(f"no {name!r} display is installed; import interpretorch (its report floor installs "
                           "the drawing)")
    return _display[name]


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
        return display_hook("overlay")(self, images, cmap, alpha, rule)

    def heatmap(self, cmap: str = "jet", rule: str = "abs_sum") -> np.ndarray:
        """Return the normalised maps rendered with a colormap as (B, H, W, 3) uint8."""
        return display_hook("heatmap")(self, cmap, rule)

    def visualize(self, kind: str = "abs_grayscale", percentile: float = 99.0,
                  cmap: str | None = None) -> np.ndarray:
        """Render the maps as the sanity-check paper does: ``abs_grayscale`` or ``diverging``, clipped at the
        ``percentile``-th percentile; returns (B, H, W, 3) uint8."""
        return display_hook("visualize")(self.maps, kind, percentile, cmap)

    def save(self, path: str | Path) -> Path:
        """Write the explanation: ``.pt`` keeps tensors and metadata, ``.png`` the first heatmap."""
        path = Path(path)
        if path.suffix == ".png":
            display_hook("save_png")(self, path)
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
        return display_hook("html")(self)

    def _repr_png_(self) -> bytes:
        return display_hook("png")(self)

    def __repr__(self) -> str:
        return (f"Explanation(method={self.method!r}, maps={tuple(self.maps.shape)}, layer={self.layer!r}, "
                f"target={None if self.target is None else self.target.tolist()})")
