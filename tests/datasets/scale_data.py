"""Generated datasets for the dataset-job tests: synthetic shapes on textures as PNG files with VOC boxes and
mask PNGs, and the tiny model they are explained with."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from interpretorch.data.synthetic import SHAPES, make_image
from interpretorch.models import Preprocess, TinyCNN

SIZE = 32
# Class folders the CLI's tiny_cnn can name ("class 0" ...): the CLI resolves folder names to the model's classes.
TINY_CNN_FOLDERS = tuple(f"class {i}" for i in range(len(SHAPES)))
PRE = Preprocess(SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def tiny_model() -> TinyCNN:
    """A fixed 4-class TinyCNN in eval mode."""
    return TinyCNN(num_classes=4, width=4).eval()


def voc_xml(boxes: list[tuple[float, float, float, float]], width: int, height: int) -> str:
    """A Pascal VOC annotation of 0-based end-exclusive boxes (VOC counts pixels from 1, both ends inclusive)."""
    objs = "".join(f"<object><name>shape</name><bndbox><xmin>{int(x0) + 1}</xmin><ymin>{int(y0) + 1}</ymin>"
                   f"<xmax>{int(x1)}</xmax><ymax>{int(y1)}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    return (f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
            f"{objs}</annotation>")


def write_dataset(root: Path, n: int, *, seed: int = 0, layout: str = "imagefolder", size: int = SIZE,
                  boxes: bool = False, masks: bool = False, folders: tuple[str, ...] = SHAPES) -> Path:
    """Write ``n`` synthetic images under ``root/data`` (class subfolders, or flat) with VOC XML boxes in
    ``root/boxes`` and mask PNGs in ``root/masks``; class ``k``'s folder is ``folders[k]``; returns the data folder."""
    from PIL import Image

    data = root / "data"
    for i in range(n):
        img, label, mask, box = make_image(seed, i, size)
        folder = data / folders[label] if layout == "imagefolder" else data
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"img{i:04d}"
        Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{stem}.png")
        if boxes:
            (root / "boxes").mkdir(exist_ok=True)
            (root / "boxes" / f"{stem}.xml").write_text(voc_xml([tuple(box.tolist())], size, size))
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
    return data
