"""Concept image sets made without data: stripes, dots, zigzags, checkerboards, solid colours, textures.

Every generator returns ``(n, 3, size, size)`` float images in [0, 1] (what a ``Preprocess`` normalises).
Image ``i`` of a set made with ``seed`` comes from its own random stream ``(seed, i)``, so a set is the same on
every run and its first ``k`` images do not depend on ``n``. Colours, phases and (unless fixed) angles, widths
and scales vary from image to image, so what the images share is the pattern, not one rendering of it.

Random sets (the "random500_i" sets of the original TCAV) come from the user's images: ``random_sets`` draws
R disjoint sets of images, ``random_crops`` R sets of random crops.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch

TEXTURES = ("brick", "grass", "gravel")


def _rng(seed: int, i: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(i)])


def _colours(rng: np.random.Generator, contrast: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two random colours at least ``contrast`` apart in brightness."""
    while True:
        a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        if abs(a.mean() - b.mean()) >= contrast / 2 and np.abs(a - b).max() >= contrast:
            return a, b


def _coords(size: int, angle_deg: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    t = np.deg2rad(angle_deg)
    u = xx * np.cos(t) + yy * np.sin(t) + rng.uniform(0, 1000)
    v = -xx * np.sin(t) + yy * np.cos(t) + rng.uniform(0, 1000)
    return u, v


def _paint(mask: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    return np.where(mask[..., None], fg, bg)


def stripes_image(rng: np.random.Generator, size: int, angles: Sequence[float] = (0, 45, 90, 135),
                  widths: Sequence[float] = (2, 3, 4), colours: tuple | None = None) -> np.ndarray:
    """One (size, size, 3) image of parallel stripes: angle and width drawn from the lists."""
    angle = float(rng.choice(angles)) + rng.uniform(-5, 5)
    width = float(rng.choice(widths))
    u, _ = _coords(size, angle, rng)
    fg, bg = colours or _colours(rng)
    return _paint((u % (2 * width)) < width, fg, bg)


def zigzag_image(rng: np.random.Generator, size: int, angles: Sequence[float] = (0, 90),
                 widths: Sequence[float] = (2, 3), colours: tuple | None = None) -> np.ndarray:
    """One image of zigzag lines (stripes displaced by a triangle wave along their length)."""
    angle = float(rng.choice(angles)) + rng.uniform(-5, 5)
    width = float(rng.choice(widths))
    u, v = _coords(size, angle, rng)
    wave = 3 * width
    tri = np.abs((v / wave) % 2 - 1) * 2 * width
    fg, bg = colours or _colours(rng)
    return _paint(((u + tri) % (3 * width)) < width, fg, bg)


def dots_image(rng: np.random.Generator, size: int, radii: Sequence[float] = (1.5, 2.0, 2.5),
               colours: tuple | None = None) -> np.ndarray:
    """One image of a jittered grid of round dots."""
    r = float(rng.choice(radii))
    spacing = r * rng.uniform(2.6, 3.4)
    u, v = _coords(size, rng.uniform(0, 90), rng)
    du = (u % spacing) - spacing / 2
    dv = (v % spacing) - spacing / 2
    fg, bg = colours or _colours(rng)
    return _paint(du ** 2 + dv ** 2 <= r ** 2, fg, bg)


def checker_image(rng: np.random.Generator, size: int, scales: Sequence[float] = (2, 4, 8),
                  angles: Sequence[float] = (0, 45), colours: tuple | None = None) -> np.ndarray:
    """One checkerboard image at a scale drawn from ``scales`` (cells of that many pixels), axis-aligned or 45 deg."""
    s = float(rng.choice(scales))
    u, v = _coords(size, float(rng.choice(angles)), rng)
    fg, bg = colours or _colours(rng)
    return _paint(((np.floor(u / s) + np.floor(v / s)) % 2) == 0, fg, bg)


def solid_image(rng: np.random.Generator, size: int, colour: Sequence[float] | None = None,
                jitter: float = 0.05) -> np.ndarray:
    """One image of a single colour (random unless given) with a little pixel noise."""
    c = np.asarray(colour if colour is not None else rng.uniform(0, 1, 3), dtype=np.float64)
    return np.clip(c + rng.normal(0, jitter, (size, size, 3)), 0, 1)


@lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)().astype(np.float64) / 255.0
    return np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]


def texture_image(rng: np.random.Generator, size: int, names: Sequence[str] = TEXTURES) -> np.ndarray:
    """One random crop of a scikit-image texture photograph (brick, grass, gravel), zoomed 1-3x, tinted."""
    name = str(rng.choice(list(names)))
    if name not in TEXTURES:
        raise ValueError(f"unknown texture {name!r}; choose from {TEXTURES}")
    tex = _texture(name)
    zoom = int(rng.integers(1, 4))
    crop = size * zoom
    y0 = int(rng.integers(0, tex.shape[0] - crop + 1))
    x0 = int(rng.integers(0, tex.shape[1] - crop + 1))
    patch = tex[y0:y0 + crop, x0:x0 + crop].reshape(size, zoom, size, zoom, 3).mean((1, 3))
    tint = rng.uniform(0.6, 1.0, 3)
    return np.clip(patch * tint, 0, 1)


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "stripes": stripes_image,
    "zigzag": zigzag_image,
    "dots": dots_image,
    "checker": checker_image,
    "solid": solid_image,
    "texture": texture_image,
}
ALIASES = {"striped": "stripes", "zigzags": "zigzag", "dotted": "dots", "checkerboard": "checker",
           "checkered": "checker", "textures": "texture", "colour": "solid", "color": "solid"}
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.1), "blue": (0.1, 0.2, 0.9), "yellow": (0.95, 0.9, 0.1),
           "black": (0.05, 0.05, 0.05), "white": (0.95, 0.95, 0.95), "gray": (0.5, 0.5, 0.5)}


def generator_names() -> list[str]:
    """Every name ``concept_set`` accepts (patterns, textures, and solid_<colour>)."""
    return list(GENERATORS) + [f"solid_{c}" for c in COLOURS]


def concept_set(name: str, n: int = 50, size: int = 64, seed: int = 0, **options) -> torch.Tensor:
    """``n`` generated images of the named concept as (n, 3, size, size) floats in [0, 1].

    Names: stripes, zigzag, dots, checker, solid, texture, and solid_<colour> (red, green, blue, yellow,
    black, white, gray); ``options`` go to the image function (e.g. ``angles=(0,)``, ``scales=(8,)``).
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key.startswith("solid_"):
        colour = key[len("solid_"):]
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}; choose from {', '.join(COLOURS)}")
        fn, options = solid_image, {"colour": COLOURS[colour], **options}
    elif key in GENERATORS:
        fn = GENERATORS[key]
    else:
        raise ValueError(f"unknown concept generator {name!r}; choose from {', '.join(generator_names())}")
    if n < 1 or size < 4:
        raise ValueError(f"need n >= 1 images of size >= 4, got n={n}, size={size}")
    imgs = [fn(_rng(seed, i), size, **options) for i in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().contiguous()


def paste(backgrounds: torch.Tensor, patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Copy of ``backgrounds`` (N, 3, H, W) with ``patches`` (N, 3, h, w) written at integer ``boxes`` (N, 4) x0,y0."""
    out = backgrounds.clone()
    h, w = patches.shape[-2:]
    for i, (x0, y0) in enumerate(boxes[:, :2].long().tolist()):
        out[i, :, y0:y0 + h, x0:x0 + w] = patches[i]
    return out


def random_sets(images: torch.Tensor, n_sets: int, per_set: int, seed: int = 0) -> list[torch.Tensor]:
    """``n_sets`` random sets of ``per_set`` images each drawn from ``images`` (disjoint when there are enough)."""
    n = images.shape[0]
    if n < per_set:
        raise ValueError(f"cannot draw sets of {per_set} images from {n} images")
    g = torch.Generator().manual_seed(int(seed))
    if n >= n_sets * per_set:
        perm = torch.randperm(n, generator=g)
        return [images[perm[i * per_set:(i + 1) * per_set]] for i in range(n_sets)]
    return [images[torch.randperm(n, generator=g)[:per_set]] for _ in range(n_sets)]


def random_crops(images: torch.Tensor, n: int, size: int, seed: int = 0, min_scale: float = 0.3
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random square crops of ``images`` resized to ``size``: (crops, source image index, boxes x0,y0,x1,y1)."""
    import torch.nn.functional as F

    N, _, H, W = images.shape
    if N == 0:
        raise ValueError("no images to crop")
    rng = np.random.default_rng(int(seed))
    crops, src, boxes = [], [], []
    for _ in range(n):
        i = int(rng.integers(N))
        side = int(round(min(H, W) * rng.uniform(min_scale, 1.0)))
        side = max(2, side)
        y0 = int(rng.integers(0, H - side + 1))
        x0 = int(rng.integers(0, W - side + 1))
        crop = images[i:i + 1, :, y0:y0 + side, x0:x0 + side]
        crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)[0])
        src.append(i)
        boxes.append((x0, y0, x0 + side, y0 + side))
    return torch.stack(crops), torch.tensor(src), torch.tensor(boxes, dtype=torch.float32)
