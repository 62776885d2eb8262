"""Explanations rendered inline in Jupyter: one explanation as a strip of maps, several as a grid (images x methods),
each map with its colour bar and raw range, pictures embedded as base64 PNGs."""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Mapping

import numpy as np

import torch

from interpretorch.explanation import Explanation, register_display
from interpretorch.report.drawing import to_uint8_images
from interpretorch.report.html import fit_view, map_views, shared_scales
from interpretorch.report.scales import Scale, css_gradient, fmt_value, overlay

__all__ = ["grid", "ExplanationGrid", "grid_html", "explanation_html", "TILE_PX"]

TILE_PX = 160


def _png(arr: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _photos(images: Any, n: int, size: tuple[int, int]) -> list[np.ndarray | None]:
    if images is None:
        return [None] * n
    arr = to_uint8_images(images)
    if arr.shape[0] != n:
        raise ValueError(f"got {arr.shape[0]} images for {n} maps")
    return [a if a.shape[:2] == size else None for a in arr]


def _tile(values: np.ndarray, photo: np.ndarray | None, scale: Scale, title: str, caption: str) -> str:
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    ticks = [fmt_value(scale.lo)] + (["0"] if scale.signed else []) + \
        [("≥ " if scale.view == "magnitude" else "") + fmt_value(scale.hi)]
    tip = f"{title}; raw min {lo:.4g}, max {hi:.4g}; colour scale {scale.describe()}"
    return (f'<figure style="margin:0;width:{TILE_PX}px;font:12px sans-serif">'
            f'<img src="{_png(overlay(values, photo, scale))}" title="{html.escape(tip)}" '
            f'style="width:{TILE_PX}px;height:{TILE_PX}px;image-rendering:pixelated;border:1px solid #ddd">'
            f'<div style="height:7px;border:1px solid #bbb;background:{css_gradient(scale.cmap)}"></div>'
            f'<div style="display:flex;justify-content:space-between;color:#444">'
            + "".join(f"<span>{html.escape(t)}</span>" for t in ticks) + "</div>"
            f'<figcaption style="overflow-wrap:anywhere"><b>{html.escape(caption)}</b><br>'
            f'<span style="color:#666">min {fmt_value(lo)} · max {fmt_value(hi)}</span></figcaption></figure>')


def grid_html(explanations: Mapping[str, Any], images: Any = None, shared_scale: bool = False,
              one_row: bool = False) -> str:
    """HTML of a grid: one row per image, one column per method (two for pixel attributions: |attribution| and
    signed), each map with its colour bar; region maps over ``images`` when given."""
    if not explanations:
        raise ValueError("no explanations to show")
    views = {m: map_views(e) for m, e in explanations.items()}
    n = {len(e) for e in explanations.values()}
    if len(n) != 1:
        raise ValueError(f"the explanations hold different numbers of images: {sorted(n)}")
    n_images = n.pop()
    first = next(iter(views.values()))[0][2]
    photos = _photos(images, n_images, tuple(first.shape[-2:]))
    shared = shared_scales(views.values(), shared_scale)
    rows = []
    for i in range(n_images):
        cells = []
        for m, vs in views.items():
            e = explanations[m]
            target = None if e.target is None else int(e.target[i])
            for suffix, group, values in vs:
                v = values[i]
                scale = shared.get(group) or fit_view(group, [v], False)
                pixel = suffix != "" or group == "magnitude"
                label = m + (" signed" if suffix else " |attr.|" if group == "magnitude" else "")
                title = f"{m}" + (f", class {target}" if target is not None else "")
                cells.append(_tile(v, None if pixel else photos[i], scale, title, label))
        rows.append("".join(cells))
    if one_row:
        rows = ["".join(rows)]
    rows = ['<div style="display:flex;flex-wrap:wrap;gap:8px;margin-bottom:8px">' + r + "</div>" for r in rows]
    note = ("one colour scale per view, shared by every map" if shared_scale else
            "each map on its own scale (the bar under it)")
    return f'<div class="interpretorch-grid"><div style="font:12px sans-serif;color:#555">{note}</div>{"".join(rows)}</div>'


def explanation_html(explanation: Any, images: Any = None) -> str:
    """HTML of one explanation: its maps side by side with their colour bars and ranges."""
    return grid_html({explanation.method: explanation}, images, one_row=True)


class ExplanationGrid:
    """Several explanations shown together in Jupyter: one row per image, one column per method."""

    def __init__(self, explanations: dict[str, Explanation], images: torch.Tensor | np.ndarray | None = None,
                 shared_scale: bool = False) -> None:
        if not explanations or not all(isinstance(e, Explanation) for e in explanations.values()):
            raise TypeError("grid() takes a non-empty dict {method name: Explanation}")
        self.explanations = dict(explanations)
        self.images = images
        self.shared_scale = shared_scale

    def _repr_html_(self) -> str:
        return grid_html(self.explanations, self.images, self.shared_scale)

    def __repr__(self) -> str:
        return f"ExplanationGrid(methods={list(self.explanations)})"


def grid(explanations: dict[str, Explanation], images: torch.Tensor | np.ndarray | None = None,
         shared_scale: bool = False) -> ExplanationGrid:
    """A dict of explanations (what ``explain(..., [methods])`` returns) as a grid that renders inline in Jupyter;
    region maps are drawn over ``images`` ((B, 3, H, W) in [0, 1]) when given."""
    return ExplanationGrid(explanations, images, shared_scale)


register_display("html", explanation_html)
