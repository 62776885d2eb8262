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
from pathlib import Path
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


def _paint(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator, bg_mean: np.ndarray) -> np.ndarray:
    """``img`` with the ``mask`` pixels painted in a noisy colour that stands out from the background mean."""
    while True:
        color = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        if np.linalg.norm(color - bg_mean) > 0.4:
            break
    obj = color[:, None, None] + rng.normal(0.0, 0.04, size=img.shape).astype(np.float32)
    return np.where(mask[None], np.clip(obj, 0.0, 1.0), img).astype(np.float32)


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
    img = _paint(img, mask, rng, img.mean(axis=(1, 2)))
    ys, xs = np.nonzero(mask)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
    return img, label, mask, box


def _check_set(n: int, size: int, min_size: int, classes: Sequence[str], scale: tuple[float, float],
               max_scale: float, why: str = "") -> None:
    """Refuse a generated set's arguments with an error naming the wrong one."""
    if n < 1:
        raise ValueError(f"n must be a positive number of images, got {n}")
    if size < min_size:
        raise ValueError(f"size must be at least {min_size} pixels{why}, got {size}")
    unknown = [c for c in classes if c not in SHAPES]
    if unknown or len(classes) < 2:
        raise ValueError(f"classes must be at least two of {SHAPES}, got {tuple(classes)}")
    if not 0.05 <= scale[0] <= scale[1] <= max_scale:
        raise ValueError(f"scale must be (low, high) fractions of the image with 0.05 <= low <= high <= "
                         f"{max_scale}, got {scale}")


def make_localisation_set(n: int, *, seed: int = 0, size: int = 64, classes: Sequence[str] = SHAPES,
                          scale: tuple[float, float] = (0.25, 0.45), start: int = 0) -> LocalisationSet:
    """Return ``n`` seeded images (indices ``start .. start+n-1`` of the stream ``seed``) with masks and boxes."""
    _check_set(n, size, 16, classes, scale, 0.9)
    items = [make_image(seed, start + i, size, classes, scale) for i in range(n)]
    images = torch.from_numpy(np.stack([it[0] for it in items]))
    labels = torch.tensor([it[1] for it in items], dtype=torch.long)
    masks = torch.from_numpy(np.stack([it[2] for it in items]))
    boxes = torch.from_numpy(np.stack([it[3] for it in items]))
    return LocalisationSet(images, labels, masks, boxes, tuple(classes),
                           {"seed": seed, "size": size, "scale": tuple(scale), "start": start})


@dataclass
class SceneSet:
    """Images with 1 to ``max_objects`` non-overlapping objects of distinct classes each and their ground truth.

    ``images`` (N, 3, H, W) float in [0, 1]; per image ``i``: ``boxes[i]`` (k, 4) float ``(x0, y0, x1, y1)``
    pixels (as in :class:`LocalisationSet`), ``labels[i]`` (k,) class indices into ``classes`` and ``masks[i]``
    (k, H, W) bool, one mask per object. ``semantic`` (N, H, W) long is the per-pixel class map of a
    segmenter: 0 background, ``label + 1`` on an object.
    """

    images: torch.Tensor
    boxes: list[torch.Tensor]
    labels: list[torch.Tensor]
    masks: list[torch.Tensor]
    classes: tuple[str, ...] = SHAPES
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def semantic(self) -> torch.Tensor:
        """(N, H, W) long: 0 on the background, ``label + 1`` on each object's pixels."""
        out = torch.zeros(self.images.shape[0], *self.images.shape[-2:], dtype=torch.long)
        for i, (m, y) in enumerate(zip(self.masks, self.labels)):
            for k in range(m.shape[0]):
                out[i][m[k]] = int(y[k]) + 1
        return out

    def targets(self) -> list[dict[str, torch.Tensor]]:
        """The ground truth as torchvision's detection targets: one dict of ``boxes``, ``labels``, ``masks``."""
        return [{"boxes": b, "labels": y, "masks": m} for b, y, m in zip(self.boxes, self.labels, self.masks)]

    def subset(self, index: slice | Sequence[int]) -> "SceneSet":
        """Return the images at ``index`` with their objects."""
        idx = list(range(len(self)))[index] if isinstance(index, slice) else [int(i) for i in index]
        return SceneSet(self.images[idx], [self.boxes[i] for i in idx], [self.labels[i] for i in idx],
                        [self.masks[i] for i in idx], self.classes, dict(self.meta))


def make_scene(seed: int, index: int, size: int = 64, classes: Sequence[str] = SHAPES,
               scale: tuple[float, float] = (0.2, 0.35), max_objects: int = 3, gap: float = 2.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw scene ``index`` of the set ``seed``: (3, H, W) image, (k, 4) boxes, (k,) labels, (k, H, W) masks.

    Each scene has 1 to ``max_objects`` objects of distinct random classes whose boxes stay ``gap`` pixels apart (an
    object that finds no free place after 50 tries is left out; the first always fits)."""
    rng = np.random.default_rng([int(seed), int(index), 7])  # 7: not the stream of make_image
    img = _background(rng, size)
    bg_mean = img.mean(axis=(1, 2))
    k = int(rng.integers(1, max_objects + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    masks: list[np.ndarray] = []
    for label in (int(v) for v in rng.permutation(len(classes))[:k]):
        extent = float(rng.uniform(*scale)) * size
        margin = extent / 2.0 + 1.0
        for _try in range(50):
            cy, cx = (float(v) for v in rng.uniform(margin, size - margin, size=2))
            mask = shape_mask(classes[label], size, cy, cx, extent)
            ys, xs = np.nonzero(mask)
            box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)
            if all(box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap or b[1] >= box[3] + gap
                   for b in boxes):
                break
        else:
            continue
        img = _paint(img, mask, rng, bg_mean)
        boxes.append(box)
        labels.append(label)
        masks.append(mask)
    return (img, np.stack(boxes), np.array(labels, dtype=np.int64), np.stack(masks))


def make_scene_set(n: int, *, seed: int = 0, size: int = 64, classes: Sequence[str] = SHAPES,
                   scale: tuple[float, float] = (0.2, 0.35), max_objects: int = 3, start: int = 0) -> SceneSet:
    """Return ``n`` seeded multi-object scenes (indices ``start .. start+n-1`` of the stream ``seed``) with each
    object's box, label and mask; objects do not overlap."""
    _check_set(n, size, 32, classes, scale, 0.5, " for scenes of several objects")
    if not 1 <= max_objects <= len(classes):
        raise ValueError(f"max_objects must be 1 to the number of classes ({len(classes)}): the objects of a scene "
                         f"are of distinct classes; got {max_objects}")
    items = [make_scene(seed, start + i, size, classes, scale, max_objects) for i in range(n)]
    images = torch.from_numpy(np.stack([it[0] for it in items]))
    return SceneSet(images, [torch.from_numpy(it[1]) for it in items], [torch.from_numpy(it[2]) for it in items],
                    [torch.from_numpy(it[3]) for it in items], tuple(classes),
                    {"seed": seed, "size": size, "scale": tuple(scale), "max_objects": max_objects, "start": start})


ANNOTATIONS_FILE = "annotations.json"
ANNOTATIONS_FORMAT = "interpretorch-objects"


def save_scene_set(scenes: SceneSet, folder: str | Path) -> Path:
    """Write ``scenes`` to ``folder`` in the dataset annotation format ``--data`` reads; returns the annotation file.

    ``images/scene_NNNNN.png`` (RGB), ``masks/scene_NNNNN.png`` (8-bit: 0 background, ``k`` on the pixels of the
    image's k-th object, counting from 1) and ``annotations.json``: ``{"format": "interpretorch-objects",
    "version": 1, "classes": [...], "images": [{"file", "width", "height", "mask", "objects": [{"label": class
    name, "box": [x0, y0, x1, y1]}]}]}``, boxes in pixels of the stored image, end-exclusive (torchvision's
    convention), every path relative to ``folder``. ``interpretorch.datasets.annotations`` reads it back.
    """
    import json

    from PIL import Image

    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    start = int(scenes.meta.get("start", 0))
    entries = []
    for i in range(len(scenes)):
        name = f"scene_{start + i:05d}.png"
        img = (scenes.images[i].permute(1, 2, 0).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / name)
        inst = np.zeros(img.shape[:2], dtype=np.uint8)
        for k in range(scenes.masks[i].shape[0]):
            inst[scenes.masks[i][k].numpy()] = k + 1
        Image.fromarray(inst).save(root / "masks" / name)
        entries.append({"file": f"images/{name}", "width": int(img.shape[1]), "height": int(img.shape[0]),
                        "mask": f"masks/{name}",
                        "objects": [{"label": scenes.classes[int(y)], "box": [float(v) for v in b.tolist()]}
                                    for b, y in zip(scenes.boxes[i], scenes.labels[i])]})
    path = root / ANNOTATIONS_FILE
    path.write_text(json.dumps({"format": ANNOTATIONS_FORMAT, "version": 1, "classes": list(scenes.classes),
                                "images": entries}, indent=1), encoding="utf-8")
    return path
