"""Localisation metrics against known objects: the pointing game and its energy-based variant, and Quantus's
localisation family (attribution localisation, top-k intersection, relevance rank / mass accuracy, AUC).

* Pointing game (Zhang et al. 2018): a hit when the map's maximum lies on the object or within
  ``tolerance`` pixels of it (15 px by default, as in the paper).
* Energy-based pointing game (Wang et al. 2020, Score-CAM): the share of the map's (positive)
  energy that falls inside the object.

Objects come as boxes or masks at the inputs' resolution; maps at another resolution are resized
bilinearly to the masks. Nothing here runs the model.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn.functional as F

from interpretorch.explanation import upsample
from interpretorch.metrics._common import MapsLike, explanation_maps
from interpretorch.metrics.perturbation import average_ranks

Boxes = Union[torch.Tensor, Sequence]


def boxes_to_masks(boxes: Boxes, size: tuple[int, int], batch: int | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Rasterise boxes ``(x0, y0, x1, y1)`` into (B, H, W) bool masks (union of each image's boxes).

    ``boxes`` is (B, 4), (B, K, 4), or a list with one (K_i, 4) array-like per image (K_i may be 0).
    Pixel ``(i, j)`` is inside when its centre ``(j + 0.5, i + 0.5)`` lies in the box, so integer
    boxes cover ``x0 <= j < x1`` and ``y0 <= i < y1`` (the torchvision convention).
    """
    h, w = size
    if isinstance(boxes, torch.Tensor):
        per_image = [boxes[i].reshape(-1, 4) for i in range(boxes.shape[0])] if boxes.dim() in (2, 3) else None
        if per_image is None or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (B, 4) or (B, K, 4), got shape {tuple(boxes.shape)}")
    else:
        per_image = []
        for bx in boxes:
            t = torch.as_tensor(bx, dtype=torch.float64) if len(bx) else torch.zeros(0, 4, dtype=torch.float64)
            if t.shape[-1] != 4:
                raise ValueError(f"each box must have 4 numbers (x0, y0, x1, y1), got shape {tuple(t.shape)}")
            per_image.append(t.reshape(-1, 4))
    if batch is not None and len(per_image) != batch:
        raise ValueError(f"got boxes for {len(per_image)} images but {batch} maps")
    cy = torch.arange(h, dtype=torch.float64) + 0.5
    cx = torch.arange(w, dtype=torch.float64) + 0.5
    out = torch.zeros(len(per_image), h, w, dtype=torch.bool)
    for i, bx in enumerate(per_image):
        bx = bx.detach().double().cpu()
        if ((bx[:, 2] < bx[:, 0]) | (bx[:, 3] < bx[:, 1])).any():
            raise ValueError(f"image {i}: boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0, got "
                             f"{bx.tolist()}")
        for x0, y0, x1, y1 in bx.tolist():
            inside_y = (cy >= y0) & (cy <= y1)
            inside_x = (cx >= x0) & (cx <= x1)
            out[i] |= inside_y[:, None] & inside_x[None, :]
    return out.to(device) if device is not None else out


def object_masks(maps: torch.Tensor, boxes: Boxes | None, masks: torch.Tensor | None,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
    """Return (B, H, W) bool object masks from ``masks`` or ``boxes`` (exactly one of them), on the maps' device."""
    if (boxes is None) == (masks is None):
        raise ValueError("give exactly one of boxes=(B, 4) boxes or masks=(B, H, W) object masks")
    b = maps.shape[0]
    if masks is not None:
        m = torch.as_tensor(masks)
        if m.dim() == 4 and m.shape[1] == 1:
            m = m[:, 0]
        if m.dim() != 3 or m.shape[0] != b:
            raise ValueError(f"masks must be (B, H, W) with B={b}, got shape {tuple(m.shape)}")
        return (m != 0).to(maps.device)
    return boxes_to_masks(boxes, size or tuple(maps.shape[-2:]), batch=b, device=maps.device)


def _maps_for(maps: MapsLike, rule: str) -> torch.Tensor:
    from interpretorch.explanation import reduce_channels

    m = explanation_maps(maps).detach()
    if m.dim() == 4:
        m = m[:, 0] if m.shape[1] == 1 else reduce_channels(m, rule)
    if m.dim() != 3:
        raise ValueError(f"maps must have shape (B, H, W) or (B, C, H, W), got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    return m.float()


def disk(radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Return the (2r+1, 2r+1) float kernel of offsets within Euclidean distance ``radius``."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    return ((t[:, None] ** 2 + t[None, :] ** 2) <= radius ** 2).float()


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Grow (B, H, W) bool masks by every pixel within Euclidean distance ``radius``."""
    if radius <= 0:
        return masks.bool()
    k = disk(radius, masks.device)[None, None]
    return F.conv2d(masks.float()[:, None], k, padding=radius)[:, 0] > 0.5


def pointing_game(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                  tolerance: int = 15, rule: str = "abs_sum") -> torch.Tensor:
    """Per-image pointing-game hits (Zhang et al. 2018): 1 when the map's maximum is within ``tolerance`` px of the object.

    When several pixels share the maximum, the value is the fraction of them that hit (the hit
    probability under random tie-breaking), so a constant map scores the chance level. Images
    without an object give NaN.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer number of pixels, got {tolerance!r}")
    m = _maps_for(maps, rule)
    obj = object_masks(m, boxes, masks)
    m = upsample(m, tuple(obj.shape[-2:]))
    flat = m.reshape(m.shape[0], -1)
    at_max = flat == flat.max(dim=1, keepdim=True).values
    near = dilate(obj, tolerance).reshape(m.shape[0], -1)
    hits = (at_max & near).sum(1).float() / at_max.sum(1).float()
    empty = obj.reshape(m.shape[0], -1).sum(1) == 0
    return torch.where(empty, torch.full_like(hits, float("nan")), hits)


def pointing_chance(*, boxes: Boxes | None = None, masks: torch.Tensor | None = None, tolerance: int = 15,
                    size: tuple[int, int] | None = None) -> torch.Tensor:
    """Per-image chance level of the pointing game: the share of pixels within ``tolerance`` of the object."""
    if masks is None:
        if size is None:
            raise ValueError("give size=(H, W) with boxes")
        obj = boxes_to_masks(boxes, size)
    else:
        obj = torch.as_tensor(masks) != 0
    return dilate(obj, tolerance).float().mean(dim=(1, 2))


def energy_pointing_game(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                         rule: str = "abs_sum") -> torch.Tensor:
    """Per-image energy-based pointing game (Score-CAM): sum of the positive map inside the object over its total.

    Negative values are clipped to zero first (CAMs after ReLU, and channel-reduced pixel
    attributions, are already non-negative); the ratio does not depend on the map's scale. Images
    without an object or with an all-zero map give NaN.
    """
    m = _maps_for(maps, rule)
    obj = object_masks(m, boxes, masks)
    m = upsample(m, tuple(obj.shape[-2:])).clamp(min=0)
    total = m.sum(dim=(1, 2))
    inside = (m * obj).sum(dim=(1, 2))
    empty = (obj.reshape(m.shape[0], -1).sum(1) == 0) | (total <= 0)
    return torch.where(empty, torch.full_like(total, float("nan")), inside / total.clamp(min=1e-30))


# ------------------------------------------------------------------ Quantus's localisation family
# Each takes maps and objects (boxes or masks) like the pointing games; a (B, C, H, W) map is reduced by ``rule``
# and a map at another resolution is resized to the objects'. Images without an object give NaN. Ties in a map
# are ordered by raster position (Quantus's np.argsort orders them arbitrarily).


def _map_and_objects(maps: MapsLike, boxes: Boxes | None, masks: torch.Tensor | None,
                     rule: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N) float64 maps and (B, N) bool objects, flattened at the objects' resolution, and which images have none."""
    m = _maps_for(maps, rule)
    obj = object_masks(m, boxes, masks)
    m = upsample(m, tuple(obj.shape[-2:])).double()
    b = m.shape[0]
    obj = obj.reshape(b, -1)
    return m.reshape(b, -1), obj, obj.sum(1) == 0


def _nan_where(values: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    return torch.where(empty, torch.full_like(values, float("nan")), values)


def attribution_localisation(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                             weighted: bool = False, positive: bool = False, absolute: bool = True,
                             rule: str = "abs_sum") -> torch.Tensor:
    """Per-image attribution localisation (Kohlbrenner et al. 2020): the share of the (max-normalised; |.| when
    ``absolute``, clipped at 0 when ``positive``) attribution inside the object; ``weighted`` multiplies it by the
    object's share of the image. NaN without an object or where the share exceeds 1 (negative attributions
    outside); higher is better.

    Quantus 0.6 weights by the object's size over ``x_batch[2:].size`` (the pixels of the batch from its third
    image on, a slip for the image's size), so its weighted figures differ from these by that factor.
    """
    a, obj, empty = _map_and_objects(maps, boxes, masks, rule)
    top = a.abs().amax(1, keepdim=True)
    a = a / torch.where(top > 0, top, torch.ones_like(top))
    a = a.abs() if absolute else a
    a = a.clamp(min=0) if positive else a
    share = (a * obj).sum(1) / (a.sum(1) + 1e-9)
    if weighted:
        share = share * obj.double().mean(1)
    return _nan_where(share, empty | (share > 1))


def _descending_hits(a: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """(B, N) whether the pixel of each rank (highest attribution first, ties in raster order) is on the object."""
    order = torch.sort(a, dim=1, descending=True, stable=True).indices
    return obj.gather(1, order)


def top_k_intersection(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                       k: int = 1000, concept_influence: bool = False, rule: str = "abs_sum") -> torch.Tensor:
    """Per-image share of the ``k`` highest-attributed pixels that lie on the object (Theiner et al. 2021);
    ``concept_influence`` divides it by the object's share of the image. Higher is better."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer number of pixels, got {k!r}")
    a, obj, empty = _map_and_objects(maps, boxes, masks, rule)
    tki = _descending_hits(a, obj)[:, :k].double().mean(1)
    if concept_influence:
        tki = tki * obj.shape[1] / obj.sum(1).clamp(min=1)
    return _nan_where(tki, empty)


def relevance_rank_accuracy(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                            rule: str = "abs_sum") -> torch.Tensor:
    """Per-image relevance rank accuracy (Arras et al. 2022): of the K highest-attributed pixels, K the object's
    size, the share on the object; higher is better."""
    a, obj, empty = _map_and_objects(maps, boxes, masks, rule)
    size = obj.sum(1, keepdim=True)
    first = torch.arange(obj.shape[1], device=obj.device)[None] < size
    hits = (_descending_hits(a, obj) & first).sum(1).double()
    return _nan_where(hits / size[:, 0].clamp(min=1), empty)


def relevance_mass_accuracy(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                            rule: str = "abs_sum") -> torch.Tensor:
    """Per-image relevance mass accuracy (Arras et al. 2022): the attribution inside the object over the total
    (signed, as Quantus); higher is better."""
    a, obj, empty = _map_and_objects(maps, boxes, masks, rule)
    return _nan_where((a * obj).sum(1) / a.sum(1), empty)


def localisation_auc(maps: MapsLike, *, boxes: Boxes | None = None, masks: torch.Tensor | None = None,
                     rule: str = "abs_sum") -> torch.Tensor:
    """Per-image area under the ROC curve of the map as a detector of the object's pixels (Fawcett 2006; tied
    values count one half, as the trapezoidal ROC does); higher is better. NaN without object or background."""
    a, obj, empty = _map_and_objects(maps, boxes, masks, rule)
    ranks = average_ranks(a)
    pos = obj.sum(1).double()
    neg = obj.shape[1] - pos
    u = (ranks * obj).sum(1) - pos * (pos + 1) / 2
    return _nan_where(u / (pos * neg).clamp(min=1), empty | (neg == 0))
