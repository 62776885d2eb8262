"""A two-image, 4x4 Broden-format dataset whose counts are worked out by hand in test_dissect.py.

The images are the activations: with mean 0 / std 1 and an identity model, unit 0/1/2 is the R/G/B channel
(255 -> 1.0). Categories: ``color`` (pixel masks), ``object`` (pixel masks, image B only), ``scene``
(image-level).

Image A: R on the top-left 2x2 block, G on row 0, B nowhere; colour mask red = top-left 2x2, green = rows 2-3;
no object; scene beach.
Image B: R on pixel (3,3), G on column 0, B on (0,0) and (1,1); colour mask red = (3,2),(3,3); object mask
cup = column 0; scene forest.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from torch import nn

from interpretorch.dissect.broden import encode_mask

LABELS = {1: ("red", "color"), 2: ("green", "color"), 3: ("beach", "scene"), 4: ("forest", "scene"),
          5: ("cup", "object")}


def write_handmade(root: Path) -> Path:
    """Write the dataset into ``root`` and return it."""
    (root / "images").mkdir(parents=True)
    a = np.zeros((4, 4, 3), np.uint8)
    a[:2, :2, 0] = 255
    a[0, :, 1] = 255
    b = np.zeros((4, 4, 3), np.uint8)
    b[3, 3, 0] = 255
    b[:, 0, 1] = 255
    b[0, 0, 2] = b[1, 1, 2] = 255
    Image.fromarray(a).save(root / "images" / "a.png")
    Image.fromarray(b).save(root / "images" / "b.png")
    ca = np.zeros((4, 4), int)
    ca[:2, :2] = 1
    ca[2:, :] = 2
    cb = np.zeros((4, 4), int)
    cb[3, 2:] = 1
    ob = np.zeros((4, 4), int)
    ob[:, 0] = 5
    for name, m in (("a_color.png", ca), ("b_color.png", cb), ("b_object.png", ob)):
        Image.fromarray(encode_mask(m)).save(root / "images" / name)
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", "ih", "iw", "sh", "sw", "color", "object", "scene"])
        w.writerow(["a.png", "train", 4, 4, 4, 4, "a_color.png", "", "3"])
        w.writerow(["b.png", "train", 4, 4, 4, 4, "b_color.png", "b_object.png", "4"])
    with open(root / "category.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "first", "last", "count", "frequency"], ["color", 1, 2, 2, 2],
                                 ["object", 5, 5, 1, 1], ["scene", 3, 4, 2, 2]])
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        w.writerow([0, "-", "", 0, 0, ""])
        for n, (name, cat) in LABELS.items():
            w.writerow([n, name, f"{cat}(1)", 1, 0.1, ""])
    return root


class Channels(nn.Module):
    """The identity model: its layer ``feat`` outputs the input image, so units are colour channels."""

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Identity()

    def forward(self, x):
        return self.feat(x).mean(dim=(2, 3))
