"""Focus (Arias-Duart et al. 2022) and the mosaics it is measured on.

A mosaic is a 2 x 2 grid of images, two of the explained class and two of other classes, in known quadrants. A
map that explains the class should put its positive relevance on the quadrants of that class: Focus is the share
of the map's positive relevance that falls there; higher is better (0.5 is what a map spread evenly gets).

``make_mosaics`` builds mosaics from any labelled images (e.g. ``data.synthetic.make_localisation_set``) and
gives, besides the images and the class to explain, the masks of the target-class quadrants, so Focus is a
localisation metric on masks: ``evaluate(..., masks=mosaics.masks, metrics="focus")``. As Quantus 0.6 (which
reads the quadrant flags instead, ``custom_batch``): the map's positive part over its total positive part (plus
1e-9); Quantus's default max-normalisation does not change this ratio.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from interpretorch.explanation import reduce_channels, upsample
from interpretorch.metrics._common import MapsLike, explanation_maps
from interpretorch.metrics.localisation import Boxes, object_masks

__all__ = ["Mosaics", "make_mosaics", "focus", "quadrant_masks"]


@dataclass
class Mosaics:
    """``images`` (N, C, 2H, 2W); ``target`` (N,) the class to explain; ``quadrants`` (N, 4) bool, which of the
    top-left, top-right, bottom-left, bottom-right tiles show that class; ``masks`` (N, 2H, 2W) those tiles;
    ``sources`` (N, 4) the index of each tile's image in the set it was built from."""

    images: torch.Tensor
    target: torch.Tensor
    quadrants: torch.Tensor
    masks: torch.Tensor
    sources: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def quadrant_masks(quadrants: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H, W) bool masks of the flagged quadrants (N, 4) (top-left, top-right, bottom-left, bottom-right; the
    halves split at ``H // 2`` and ``W // 2``, as Quantus)."""
    q = torch.as_tensor(quadrants).bool()
    if q.dim() != 2 or q.shape[1] != 4:
        raise ValueError(f"quadrants must be (N, 4) flags, got shape {tuple(q.shape)}")
    hh, hw = height // 2, width // 2
    top = torch.arange(height, device=q.device)[:, None] < hh
    left = torch.arange(width, device=q.device)[None, :] < hw
    tiles = torch.stack([top & left, top & ~left, ~top & left, ~top & ~left])  # (4, H, W)
    return (q[:, :, None, None] & tiles[None]).any(1)


def make_mosaics(images: torch.Tensor, labels: torch.Tensor, n: int, *, seed: int = 0,
                 per_class: int = 2) -> Mosaics:
    """``n`` seeded 2 x 2 mosaics of ``images`` (M, C, H, W) with class ``labels`` (M,): each has ``per_class``
    tiles of a class drawn at random (its target) in random quadrants and the others from other classes; no image
    appears twice in one mosaic."""
    x = torch.as_tensor(images)
    y = torch.as_tensor(labels).long()
    if x.dim() != 4 or y.shape != (x.shape[0],):
        raise ValueError(f"images must be (M, C, H, W) with one label each, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive number of mosaics, got {n!r}")
    if per_class not in (1, 2, 3):
        raise ValueError(f"per_class must be 1, 2 or 3 tiles of the target class, got {per_class}")
    gen = torch.Generator().manual_seed(int(seed))
    counts = torch.bincount(y)
    usable = [c for c in range(counts.numel()) if counts[c] >= per_class
              and int((y != c).sum()) >= 4 - per_class]
    if not usable:
        raise ValueError(f"no class has {per_class} images and {4 - per_class} images of other classes; "
                         "give more labelled images")
    tiles, targets, flags, sources = [], [], [], []
    h, w = x.shape[-2:]
    for _ in range(n):
        c = usable[int(torch.randint(len(usable), (1,), generator=gen))]
        same = torch.nonzero(y == c).flatten()
        other = torch.nonzero(y != c).flatten()
        pick_same = same[torch.randperm(same.numel(), generator=gen)[:per_class]]
        pick_other = other[torch.randperm(other.numel(), generator=gen)[:4 - per_class]]
        order = torch.randperm(4, generator=gen)
        src = torch.cat([pick_same, pick_other])[order]
        flag = (torch.arange(4) < per_class)[order]
        t = x[src]
        tiles.append(torch.cat([torch.cat([t[0], t[1]], -1), torch.cat([t[2], t[3]], -1)], -2))
        targets.append(c)
        flags.append(flag)
        sources.append(src)
    q = torch.stack(flags)
    return Mosaics(torch.stack(tiles), torch.tensor(targets), q, quadrant_masks(q, 2 * h, 2 * w),
                   torch.stack(sources))


def focus(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
          quadrants: torch.Tensor | None = None, rule: str = "sum") -> torch.Tensor:
    """Per-image Focus: the share of each map's positive relevance inside the target-class tiles (``masks``,
    ``boxes``, or ``quadrants`` (B, 4) flags); higher is better. Channel maps are reduced by ``rule`` first
    (default their sum: Focus reads the sign)."""
    m = explanation_maps(maps).detach()
    if m.dim() == 4:
        m = m[:, 0] if m.shape[1] == 1 else reduce_channels(m, rule)
    if m.dim() != 3:
        raise ValueError(f"maps must have shape (B, H, W) or (B, C, H, W), got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    a = m.double()
    b = a.shape[0]
    if quadrants is not None:
        inside = quadrant_masks(quadrants, a.shape[1], a.shape[2]).to(a.device)
        if inside.shape[0] != b:
            raise ValueError(f"got {inside.shape[0]} quadrant flags for {b} maps")
    else:
        inside = object_masks(a, boxes, masks)
        a = upsample(a, tuple(inside.shape[-2:]))
    pos = a.clamp(min=0)
    return (pos * inside).flatten(1).sum(1) / (pos.flatten(1).sum(1) + 1e-9)
