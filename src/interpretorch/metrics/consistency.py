"""Local sufficiency and consistency (Dasgupta, Frost & Moshkovitz 2022): do images whose explanations agree get
the same prediction? Both are computed across the images given together (a batch is the data set), from the
maps and the model's top-1 classes; neither runs the model beyond the clean pass.

* Sufficiency: an explanation "applies" to another image when their maps are close: the standardised Euclidean
  distance (each feature divided by its variance over the images), divided by the largest distance of the set,
  at most ``threshold``. Per image: the share of the other images it applies to that have its predicted class;
  higher is better.
* Consistency: maps are discretised to labels (``discretise``); per image: the share of the other images with
  the same label that have its predicted class. The paper's direction: higher is better (a probability of
  agreement). Quantus 0.6 registers it as lower-is-better, and its default discretisation (``top_n_sign``) takes
  the signs of the *first* five values of the flattened map in raster order, which after its ``abs=True`` are all
  1 for every map: every image then has the same label and Quantus's consistency is the share of images
  predicted as the same class, whatever the maps. Here the default label is the set of the ``n`` strongest cells
  of the |map| pooled to a ``cells`` grid; ``discretise="first_n_sign"`` is Quantus's rule.

Where an image has no other image to compare with (no close map, no equal label) the value is NaN; Quantus 0.6
returns 0 there (its division by infinity, or by 1e-9).
"""
from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F

from interpretorch.metrics._common import MapsLike, explanation_maps

__all__ = ["sufficiency", "consistency", "discretise_maps", "DISCRETISATIONS"]

Discretise = Union[str, Callable[[torch.Tensor], torch.Tensor]]
DISCRETISATIONS = ("top_cells", "first_n_sign")


def _flat(maps: MapsLike, absolute: bool) -> torch.Tensor:
    m = explanation_maps(maps).detach()
    if m.dim() < 2:
        raise ValueError(f"maps must have a batch dimension and at least one more, got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    m = m.reshape(m.shape[0], -1).double()
    return m.abs() if absolute else m


def _classes(predictions: torch.Tensor, b: int) -> torch.Tensor:
    p = torch.as_tensor(predictions)
    if p.dim() == 2:
        p = p.argmax(1)
    if p.shape != (b,):
        raise ValueError(f"predictions must be (B={b},) classes or (B, K) outputs, got shape {tuple(p.shape)}")
    return p.long()


def _share(agree: torch.Tensor, related: torch.Tensor) -> torch.Tensor:
    """Per row: the share of ``related`` others (off the diagonal) that ``agree``; NaN without any."""
    b = related.shape[0]
    related = related & ~torch.eye(b, dtype=torch.bool, device=related.device)
    n = related.sum(1)
    hits = (related & agree).sum(1)
    return torch.where(n > 0, hits.double() / n.clamp(min=1), torch.full((b,), float("nan"), dtype=torch.float64,
                                                                         device=related.device))


def sufficiency(maps: MapsLike, predictions: torch.Tensor, *, threshold: float = 0.6, absolute: bool = True
                ) -> torch.Tensor:
    """Per-image local sufficiency (Dasgupta et al. 2022) of the maps of a set of images with ``predictions``
    ((B,) classes or (B, K) outputs); higher is better, NaN where no other map is within ``threshold``."""
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a fraction of the largest distance, in [0, 1]; got {threshold}")
    a = _flat(maps, absolute)
    b = a.shape[0]
    if b < 2:
        raise ValueError("sufficiency compares images with each other: give at least 2")
    cls = _classes(predictions, b).to(a.device)
    var = a.var(0, unbiased=True)
    # A feature equal in every map separates no pair (scipy's seuclidean divides 0 by 0 there: Quantus then
    # gets NaN distances and a sufficiency of 0 for every image).
    keep = var > 0
    z = a[:, keep] / var[keep].sqrt()
    dist = torch.cdist(z, z)
    top = dist.max()
    close = (dist / top <= threshold) if top > 0 else torch.ones_like(dist, dtype=torch.bool)
    return _share(cls[None] == cls[:, None], close)


def discretise_maps(maps: MapsLike, discretise: Discretise = "top_cells", *, n: int = 3,
                    cells: tuple[int, int] = (4, 4), absolute: bool = True) -> torch.Tensor:
    """(B,) integer labels of the maps: "top_cells" (which ``n`` cells of the |map| average-pooled to ``cells``
    hold the most), "first_n_sign" (Quantus 0.6's ``top_n_sign``: the signs of the first ``n`` values in raster
    order), or a callable (B, N) float64 -> (B,) labels."""
    m = explanation_maps(maps).detach()
    if callable(discretise):
        out = torch.as_tensor(discretise(_flat(maps, absolute)))
        if out.shape[0] != m.shape[0]:
            raise ValueError(f"discretise returned {out.shape[0]} labels for {m.shape[0]} maps")
        return out.reshape(m.shape[0], -1).long()
    if discretise not in DISCRETISATIONS:
        raise ValueError(f"unknown discretise {discretise!r}; choose one of {DISCRETISATIONS} or give a callable")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    flat = _flat(maps, absolute)
    if discretise == "first_n_sign":
        return torch.sign(flat[:, :n]).long()
    if m.dim() == 4:
        m = m.abs().sum(1) if absolute else m.sum(1)
    if m.dim() != 3:
        raise ValueError(f"top_cells needs (B, H, W) or (B, C, H, W) maps, got shape {tuple(m.shape)}")
    m = m.double().abs() if absolute else m.double()
    pooled = F.adaptive_avg_pool2d(m[:, None], cells).flatten(1)
    if n > pooled.shape[1]:
        raise ValueError(f"n ({n}) exceeds the {pooled.shape[1]} cells")
    top = torch.sort(pooled, dim=1, descending=True, stable=True).indices[:, :n]
    member = torch.zeros_like(pooled, dtype=torch.long).scatter_(1, top, 1)
    return member


def consistency(maps: MapsLike, predictions: torch.Tensor, *, discretise: Discretise = "top_cells", n: int = 3,
                cells: tuple[int, int] = (4, 4), absolute: bool = True) -> torch.Tensor:
    """Per-image local consistency (Dasgupta et al. 2022): among the other images whose maps get the same label
    (``discretise_maps``), the share predicted as the same class; higher is better, NaN without such images."""
    labels = discretise_maps(maps, discretise, n=n, cells=cells, absolute=absolute)
    b = labels.shape[0]
    if b < 2:
        raise ValueError("consistency compares images with each other: give at least 2")
    cls = _classes(predictions, b).to(labels.device)
    same = (labels[None] == labels[:, None]).all(-1)
    return _share(cls[None] == cls[:, None], same)
