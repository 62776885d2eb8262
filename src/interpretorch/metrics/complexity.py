"""Complexity of the maps themselves (Quantus's complexity family); nothing here runs the model.

* Sparseness (Chalasani et al. 2020): the Gini index of the map's absolute values; higher is sparser.
* Complexity (Bhatt et al. 2020): the entropy of the map's share of total |attribution|; lower is simpler.
* Effective complexity (Nguyen & Martinez 2020): the number of features whose max-normalised |attribution|
  exceeds ``eps``; lower is simpler.

Each takes maps (B, ...) and flattens every dimension after the first. As in Quantus 0.6 (``normalise=True,
abs=True``), a map is divided by its largest absolute value and then made absolute. One difference, by design:
Quantus divides the whole batch by the batch's largest value (``normalise_by_max`` over every axis), so an image's
figure depends on the other images given with it; here each map is divided by its own maximum. Gini and entropy
barely notice (only their stabilising constants see the scale); effective complexity does (see the tests).
"""
from __future__ import annotations

import torch

from interpretorch.metrics._common import MapsLike, explanation_maps

__all__ = ["max_normalised", "sparseness", "complexity", "effective_complexity"]


def max_normalised(maps: MapsLike, *, normalise: bool = True, absolute: bool = True) -> torch.Tensor:
    """(B, N) float64 maps flattened per image, divided by their own largest |value| (``normalise``; an all-zero
    map stays zero) and made absolute (``absolute``)."""
    m = explanation_maps(maps).detach()
    if m.dim() < 2:
        raise ValueError(f"maps must have a batch dimension and at least one more, got shape {tuple(m.shape)}")
    m = m.reshape(m.shape[0], -1).double()
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    if normalise:
        top = m.abs().amax(dim=1, keepdim=True)
        m = m / torch.where(top > 0, top, torch.ones_like(top))
    return m.abs() if absolute else m


def sparseness(maps: MapsLike, *, normalise: bool = True, absolute: bool = True) -> torch.Tensor:
    """Per-image Gini index of the maps (Chalasani et al. 2020), in [0, 1]; higher is sparser."""
    a = max_normalised(maps, normalise=normalise, absolute=absolute) + 1e-7  # Quantus's constant: no 0 / 0
    n = a.shape[1]
    a = torch.sort(a, dim=1).values
    k = torch.arange(1, n + 1, dtype=a.dtype, device=a.device)
    return ((2 * k - n - 1) * a).sum(1) / (n * a.sum(1))


def complexity(maps: MapsLike, *, normalise: bool = True, absolute: bool = True) -> torch.Tensor:
    """Per-image entropy of the fractional contributions |a_i| / sum |a| (Bhatt et al. 2020); lower is simpler.
    An all-zero map has no defined share and gives NaN."""
    a = max_normalised(maps, normalise=normalise, absolute=absolute)
    total = a.abs().sum(1, keepdim=True)
    p = a / total
    return -(p * torch.log(p + 1e-12)).sum(1)


def effective_complexity(maps: MapsLike, *, eps: float = 1e-5, normalise: bool = True,
                         absolute: bool = True) -> torch.Tensor:
    """Per-image count of features whose (max-normalised, absolute) attribution exceeds ``eps`` (Nguyen & Martinez
    2020); lower is simpler."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    a = max_normalised(maps, normalise=normalise, absolute=absolute)
    return (a > eps).sum(1).double()
