"""A seeded synthetic localisation dataset: shapes pasted on textured backgrounds, with known masks and boxes.

Every image ``i`` of a set made with ``seed`` is drawn from its own random stream ``(seed, i)``, so
the first ``k`` images do not depend on how many are asked for, and ``make_localisation_set`` gives
the same tensors on every run. Textures are the brick / grass / gravel photographs that ship with
scikit-image; object classes are geometric shapes of random colour, position and size, so only the
shape tells the class and a model that classifies well has to look at the object.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

SHAPES = ("disk", "square", "triangle", "cross")
TEXTURES = ("brick", "grass", "gravel")


@dataclass
class LocalisationSet:
    """Images with one object each and its ground truth.

    ``images`` (N, 3, H, W) float in [0, 1]; ``labels`` (N,) class indices into ``classes``;
    ``masks`` (N, H, W) bool object masks; ``boxes`` (N, 4) float ``(x0, y0, x1, y1)`` in pixel units
    (pixel ``(i, j)`` is inside when ``x0 <= j < x1`` and ``y0 <= i < y1``, as in torchvision).
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: torch.Tensor
    classes: tuple[str, ...] = SHAPES
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: slice | Sequence[int] | torch.Tensor) -> "LocalisationSet":
        """Return the images at ``index`` with their labels, masks and boxes."""
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return LocalisationSet(self.images[index], self.labels[index], self.masks[index], self.boxes[index],
                               self.classes, dict(self.meta))


@lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    import skimage.data

    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose from {TEXTURES}")
    return getattr(skimage.data, name)().astype(np.float32) / 255.0


def shape_mask(shape: str, size: int, cy: float, cx: float, extent: float) -> np.ndarray:
    """Return the (size, size) bool mask of ``shape`` centred at (cy, cx) with side / diameter ``extent`` px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    half = extent / 2.0
    if shape == "disk":
        return dy ** 2 + dx ** 2 <= half ** 2
    if shape == "square":
        s = 0.85 * half  # about the area of the disk of the same extent
        return (np.abs(dy) <= s) & (np.abs(dx) <= s)
    if shape == "triangle":
        t = (dy + half) / extent  # 0 at the apex, 1 at the base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * half)
    if shape == "cross":
        arm = extent / 6.0
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= half)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= half))
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    tex = _texture(TEXTURES[rng.integers(len(TEXTURES))])
    zoom = int(rng.integers(1, 4))  # average-pool 1, 2 or 3 texture pixels into one
    crop = size * zoom
    top, left = (int(v) for v in rng.integers(0, tex.shape[0] - crop + 1, size=2))
    patch = tex[top:top + crop, left:left + crop].reshape(size, zoom, size, zoom).mean(axis=(1, 3))
    patch = np.rot90(patch, int(rng.integers(4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    color = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    contrast = np.float32(rng.uniform(0.2, 0.5))
    bg = color[:, None, None] + contrast * (patch - patch.mean())[None]
    return np.clip(bg, 0.0, 1.0)


def make_image(seed: int, index: int, size: int = 64, classes: Sequence[str] = SHAPES,
               scale: tuple[float, float] = (0.25, 0.45)) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Draw image ``index`` of the set ``seed``: (3, H, W) float32 image, label, (H, W) mask, (4,) box."""
    rng = np.random.default_rng([int(seed), int(index)])
    img = _background(rng, size)
    label = int(rng.integers(len(classes)))
    extent = float(rng.uniform(*scale)) * size
    margin = extent / 2.0 + 1.0
    cy, cx = (float(v) for v in rng.uniform(margin, size - margin, size=2))
    mask = shape_mask(classes[label], size, cy, cx, extent)
    bg_mean = img.mean(axis=(1, 2))
    while True:  # an object colour that stands out from the background
        color = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        if np.linalg.norm(color - bg_mean) > 0.4:
            break
    obj = color[:, None, None] + rng.normal(0.0, 0.04, size=(3, size, size)).astype(np.float32)
    img = np.where(mask[None], np.clip(obj, 0.0, 1.0), img).astype(np.float32)
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    return img, label, mask, box


def make_localisation_set(n: int, *, seed: int = 0, size: int = 64, classes: Sequence[str] = SHAPES,
                          scale: tuple[float, float] = (0.25, 0.45), start: int = 0) -> LocalisationSet:
    """Return ``n`` seeded images (indices ``start .. start+n-1`` of the stream ``seed``) with masks and boxes."""
    if n < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(classes) < 2:
        raise ValueError(f"classes must be at least two of {SHAPES}, got {tuple(classes)}")
    if not 0.05 <= scale[0] <= scale[1] <= 0.9:
        raise ValueError(f"scale must be (low, high) fractions of the image with 0.05 <= low <= high <= 0.9, "
                         f"got {scale}")
    items = [make_image(seed, start + i, size, classes, scale) for i in range(n)]
    images = torch.from_numpy(np.stack([it[0] for it in items]))
    labels = torch.tensor([it[1] for it in items], dtype=torch.long)
    masks = torch.from_numpy(np.stack([it[2] for it in items]))
    boxes = torch.from_numpy(np.stack([it[3] for it in items]))
    return LocalisationSet(images, labels, masks, boxes, tuple(classes),
                           {"seed": seed, "size": size, "scale": tuple(scale), "start": start})
