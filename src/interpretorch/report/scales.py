"""Colour scales for maps: what range a colour stands for, stated once and drawn as a colour bar.

Three views, each with its scale:

- ``sequential``: unsigned region maps (CAMs, RISE) from 0 to their maximum in ``jet`` (a non-negative map's
  colours start at 0, so a flat map looks flat), blended over the image;
- ``diverging``: signed maps (occlusion, the signed sum of a pixel attribution) in ``bwr`` centred on zero,
  from -s to +s with s the 99th percentile of |value| (clipped beyond, so one extreme value does not wash out
  the rest);
  region maps are blended over the image with an opacity growing with |value|, so zero shows the photo;
- ``magnitude``: |pixel attribution| summed over channels, in grayscale from 0 to its 99th percentile
  (clipped above), as Adebayo et al. 2018 show them.

A scale is either per image (each map stretched to its own range) or shared across every map of the same view in
a report (``shared=True``), so maps can be compared across methods and images.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

SEQUENTIAL_CMAP = "jet"
DIVERGING_CMAP = "bwr"
MAGNITUDE_CMAP = "gray"
PIXEL_PERCENTILE = 99.0
OVERLAY_ALPHA = 0.5
SIGNED_ALPHA = 0.75
VIEWS = ("sequential", "diverging", "magnitude")


@dataclass(frozen=True)
class Scale:
    """The range ``[lo, hi]`` a colormap spans for one map (or a shared set of maps), and how it was chosen."""

    view: str
    lo: float
    hi: float
    shared: bool = False

    @property
    def cmap(self) -> str:
        """The matplotlib colormap of the view."""
        return {"sequential": SEQUENTIAL_CMAP, "diverging": DIVERGING_CMAP, "magnitude": MAGNITUDE_CMAP}[self.view]

    @property
    def signed(self) -> bool:
        """Whether the scale is centred on zero."""
        return self.view == "diverging"

    def describe(self) -> str:
        """One line saying what the colours mean, e.g. 'per-image min-max' or 'shared, diverging around 0'."""
        how = "shared across methods and images" if self.shared else "per image"
        if self.view == "sequential":
            return f"{how}: from 0 to the maximum"
        if self.view == "diverging":
            return f"{how}: signed, centred on 0 (blue < 0 < red), clipped at the {PIXEL_PERCENTILE:g}th percentile of |value|"
        return f"{how}: |attribution| from 0 to its {PIXEL_PERCENTILE:g}th percentile (clipped above)"

    def unit(self, values: np.ndarray) -> np.ndarray:
        """``values`` mapped into [0, 1] along the colormap (0.5 is zero for a diverging scale)."""
        span = self.hi - self.lo
        if not np.isfinite(span) or span <= 0:
            return np.full(values.shape, 0.5 if self.signed else 0.0)
        return np.clip((values - self.lo) / span, 0.0, 1.0)

    def to_dict(self) -> dict:
        """JSON-ready fields plus the colormap and its description."""
        return {**asdict(self), "cmap": self.cmap, "describe": self.describe()}


def is_signed(values: np.ndarray, rel: float = 1e-6) -> bool:
    """Whether a map has negative values that matter (below -rel times its largest |value|)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return False
    top = float(np.abs(v).max())
    return top > 0 and float(v.min()) < -rel * top


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def fit_scale(view: str, maps: Iterable[np.ndarray], shared: bool = False) -> Scale:
    """The scale of ``view`` that covers ``maps`` (one map for a per-image scale, all of them for a shared one)."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; choose one of {VIEWS}")
    v = np.concatenate([_finite(m) for m in maps] or [np.zeros(0)])
    if v.size == 0:
        return Scale(view, 0.0, 1.0, shared)
    if view == "sequential":
        hi = float(v.max())
        return Scale(view, min(0.0, float(v.min())), hi if hi > 0 else 1.0, shared)
    a = np.abs(v)
    if view == "diverging":
        s = float(np.percentile(a, PIXEL_PERCENTILE)) or float(a.max()) or 1.0
        return Scale(view, -s, s, shared)
    hi = float(np.percentile(a, PIXEL_PERCENTILE))
    if hi <= 0:
        hi = float(a.max())
    return Scale(view, 0.0, hi, shared)


def pixel_signed_scale(maps: Sequence[np.ndarray], shared: bool = False) -> Scale:
    """The diverging scale of signed pixel attributions: +-(99th percentile of |value|), clipped beyond."""
    v = np.concatenate([_finite(m) for m in maps] or [np.zeros(0)])
    if v.size == 0:
        return Scale("diverging", -1.0, 1.0, shared)
    a = np.abs(v)
    s = float(np.percentile(a, PIXEL_PERCENTILE))
    if s <= 0:
        s = float(a.max())
    return Scale("diverging", -s, s, shared)


def colorize(values: np.ndarray, scale: Scale) -> np.ndarray:
    """(H, W) values as (H, W, 3) uint8 colours of the scale's colormap."""
    import matplotlib

    rgb = matplotlib.colormaps[scale.cmap](scale.unit(np.asarray(values, dtype=np.float64)))[..., :3]
    return (rgb * 255).round().astype(np.uint8)


def overlay(values: np.ndarray, image: np.ndarray | None, scale: Scale) -> np.ndarray:
    """(H, W) values drawn over an (H, W, 3) uint8 image (or alone when None) with the scale's colours.

    Sequential maps blend at a fixed opacity; diverging maps with an opacity growing with |value|, so zero leaves
    the photo as it is and the colour's hue says the sign.
    """
    colors = colorize(values, scale).astype(np.float32) / 255.0
    if image is None:
        return (colors * 255).round().astype(np.uint8)
    if scale.signed:
        alpha = SIGNED_ALPHA * np.abs(scale.unit(np.asarray(values, dtype=np.float64)) * 2 - 1)[..., None]
    else:
        alpha = OVERLAY_ALPHA
    return blend(image, colors, alpha)


def blend(image: np.ndarray, colors: np.ndarray, alpha: float | np.ndarray) -> np.ndarray:
    """Colours in [0, 1] (..., 3) laid over uint8 images (..., 3) at opacity ``alpha``; returns uint8.

    The one overlay renderer: the pages (:func:`overlay`, colours from a :class:`Scale`) and
    ``Explanation.overlay`` (``report.drawing.overlay``, a named colormap on normalised maps) both blend here.
    """
    out = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colors
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def css_gradient(cmap: str, stops: int = 11) -> str:
    """A CSS ``linear-gradient`` drawing the colormap left to right (the colour bar of a scale)."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    parts = []
    for i in range(stops):
        t = i / (stops - 1)
        r, g, b, _ = cm(t)
        parts.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x} {t * 100:.0f}%")
    return "linear-gradient(to right, " + ", ".join(parts) + ")"


def fmt_value(v: float | None) -> str:
    """A map value in 3 significant digits (scientific for tiny and huge ones)."""
    if v is None or not np.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    return f"{v:.3g}"
