"""A seeded synthetic probe dataset in Broden format: colours, textures, objects, parts and scenes.

Each image is a scene (image-level label) drawn as a sky over a grainy ground in the scene's colours, with one
to three objects (geometric shapes) in front. Every object has a colour, a fill texture, a black rim and a white
core (its two parts). Pixel labels are written for four categories - ``color``, ``object`` (the shapes plus the
``sky`` and ``ground`` stuff), ``part`` (``rim``, ``core``) and ``texture`` (``striped``, ``checkered``,
``dotted``, ``grainy``) - at ``mask_size`` (half the image size by default, as Broden), and ``scene`` is an
image-level category. Image ``i`` of seed ``s`` is drawn from its own random stream ``(s, i)``, so a larger set
starts with the images of a smaller one.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from interpretorch.data.synthetic import shape_mask
from interpretorch.dissect.broden import encode_mask

COLORS = {
    "red": (0.85, 0.1, 0.1), "green": (0.1, 0.65, 0.15), "blue": (0.1, 0.2, 0.85), "yellow": (0.95, 0.85, 0.1),
    "orange": (0.95, 0.5, 0.05), "purple": (0.55, 0.1, 0.65), "white": (0.95, 0.95, 0.95),
    "black": (0.05, 0.05, 0.05), "sky-blue": (0.45, 0.7, 0.95), "brown": (0.45, 0.3, 0.15),
}
SHAPES = ("disk", "square", "triangle", "cross")
OBJECTS = SHAPES + ("sky", "ground")
PARTS = ("rim", "core")
TEXTURES = ("striped", "checkered", "dotted", "grainy")
FILLS = ("plain", "striped", "checkered", "dotted")
# scene -> (sky colour, ground colour, shapes that tend to appear there)
SCENES = {
    "beach": ("sky-blue", "yellow", ("disk", "triangle")),
    "forest": ("white", "green", ("triangle", "cross")),
    "night": ("black", "purple", ("disk", "square")),
    "desert": ("sky-blue", "orange", ("square", "cross")),
    "field": ("blue", "brown", ("disk", "square", "triangle", "cross")),
}
CATEGORIES = ("color", "object", "part", "texture", "scene")


def label_table() -> list[tuple[int, str, str]]:
    """Return (global number, name, category) of every probe label; number 0 is reserved for 'unlabelled'."""
    out, n = [], 1
    for cat, names in (("color", COLORS), ("object", OBJECTS), ("part", PARTS), ("texture", TEXTURES),
                       ("scene", SCENES)):
        for name in names:
            out.append((n, name, cat))
            n += 1
    return out


def _numbers() -> dict[tuple[str, str], int]:
    return {(cat, name): num for num, name, cat in label_table()}


def _fill_pattern(fill: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) bool: where a textured fill shows its dark colour."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // int(rng.integers(6, 10)))
    if fill == "striped":
        return ((xx + yy) // (period // 2)) % 2 == 0 if rng.random() < 0.5 else (yy // (period // 2)) % 2 == 0
    if fill == "checkered":
        return ((xx // (period // 2)) + (yy // (period // 2))) % 2 == 0
    if fill == "dotted":
        cy, cx = yy % period - period / 2 + 0.5, xx % period - period / 2 + 0.5
        return cy ** 2 + cx ** 2 <= (period * 0.28) ** 2
    return np.zeros((size, size), dtype=bool)


def draw_probe_image(seed: int, index: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Draw image ``index`` of set ``seed``: uint8 RGB image, per category its label numbers, and the scene label."""
    rng = np.random.default_rng([int(seed), int(index)])
    num = _numbers()
    scene = list(SCENES)[int(rng.integers(len(SCENES)))]
    sky, ground, likely = SCENES[scene]
    img = np.zeros((size, size, 3), dtype=np.float32)
    lab = {c: np.zeros((size, size), dtype=np.int64) for c in ("color", "object", "part", "texture")}
    horizon = int(rng.uniform(0.35, 0.6) * size)
    img[:horizon] = COLORS[sky]
    img[horizon:] = COLORS[ground]
    img[horizon:] += rng.normal(0, 0.07, size=(size - horizon, size, 1)).astype(np.float32)
    lab["color"][:horizon], lab["color"][horizon:] = num["color", sky], num["color", ground]
    lab["object"][:horizon], lab["object"][horizon:] = num["object", "sky"], num["object", "ground"]
    lab["texture"][horizon:] = num["texture", "grainy"]

    n_obj = int(rng.integers(1, 4))
    used = {sky, ground, "black", "white"}
    for _ in range(n_obj):
        shape = str(rng.choice(likely)) if rng.random() < 0.8 else str(rng.choice(SHAPES))
        extent = float(rng.uniform(0.28, 0.5)) * size
        margin = extent / 2 + 1
        cy, cx = (float(v) for v in rng.uniform(margin, size - margin, size=2))
        mask = shape_mask(shape, size, cy, cx, extent)
        inner = shape_mask(shape, size, cy, cx, extent * 0.8)
        rim = mask & ~inner
        core = shape_mask("disk", size, cy, cx, extent * 0.22) & inner
        colour = str(rng.choice([c for c in COLORS if c not in used]))
        fill = str(rng.choice(FILLS))
        pattern = _fill_pattern(fill, size, rng) & inner & ~core
        base = np.asarray(COLORS[colour], dtype=np.float32)
        img[inner] = base
        img[pattern] = base * 0.45
        img[rim] = COLORS["black"]
        img[core] = COLORS["white"]
        lab["color"][inner] = num["color", colour]
        lab["color"][rim] = num["color", "black"]
        lab["color"][core] = num["color", "white"]
        lab["object"][mask] = num["object", shape]
        lab["part"][mask] = 0
        lab["part"][rim] = num["part", "rim"]
        lab["part"][core] = num["part", "core"]
        lab["texture"][mask] = num["texture", fill] if fill != "plain" else 0
        lab["texture"][core | rim] = 0
    img += rng.normal(0, 0.02, size=img.shape).astype(np.float32)
    img8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return img8, lab, num["scene", scene]


def make_probe(directory: str | Path, n_images: int = 100, size: int = 112, seed: int = 0,
               mask_size: int | None = None) -> Path:
    """Write a seeded synthetic Broden-format probe dataset of ``n_images`` ``size`` px images into ``directory``."""
    from PIL import Image

    if n_images < 1:
        raise ValueError(f"n_images must be positive, got {n_images}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    mask_size = size // 2 if mask_size is None else int(mask_size)
    if not 1 <= mask_size <= size:
        raise ValueError(f"mask_size must lie in [1, size={size}], got {mask_size}")
    root = Path(directory)
    (root / "images" / "probe").mkdir(parents=True, exist_ok=True)
    pick = ((np.arange(mask_size) + 0.5) * size / mask_size).astype(int)
    table = label_table()
    images_with = {n: 0 for n, _, _ in table}
    pixels_of = {n: 0 for n, _, _ in table}
    rows = []
    for i in range(n_images):
        img, lab, scene = draw_probe_image(seed, i, size)
        name = f"probe/{i:06d}"
        Image.fromarray(img).save(root / "images" / f"{name}.png", compress_level=1)
        cells = {}
        for cat, full in lab.items():
            m = full[np.ix_(pick, pick)]
            present = np.unique(m[m > 0])
            if present.size == 0:
                cells[cat] = ""
                continue
            Image.fromarray(encode_mask(m)).save(root / "images" / f"{name}_{cat}.png", compress_level=1)
            cells[cat] = f"{name}_{cat}.png"
            for n in present:
                images_with[int(n)] += 1
                pixels_of[int(n)] += int((m == n).sum())
        cells["scene"] = str(scene)
        images_with[scene] += 1
        pixels_of[scene] += mask_size * mask_size
        rows.append([f"{name}.png", "train", size, size, mask_size, mask_size] + [cells[c] for c in CATEGORIES])

    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", "ih", "iw", "sh", "sw", *CATEGORIES])
        w.writerows(rows)
    total_px = n_images * mask_size * mask_size
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        w.writerow([0, "-", "", 0, 0, ""])
        for n, name, cat in table:
            w.writerow([n, name, f"{cat}({images_with[n]})", images_with[n],
                        f"{pixels_of[n] / total_px:.6f}", ""])
    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "first", "last", "count", "frequency"])
        for cat in CATEGORIES:
            nums = [n for n, _, c in table if c == cat]
            w.writerow([cat, min(nums), max(nums), len(nums), sum(images_with[n] > 0 for n in nums)])
    for cat in CATEGORIES:
        with open(root / f"c_{cat}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["code", "number", "name", "frequency", "coverage"])
            w.writerow([0, 0, "-", 0, 0])
            for code, (n, name, _) in enumerate([t for t in table if t[2] == cat], start=1):
                w.writerow([code, n, name, images_with[n], f"{pixels_of[n] / total_px:.6f}"])
    return root
