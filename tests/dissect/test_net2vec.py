"""Net2Vec: two units that each cover half of a concept combine into a full segmentation; single units do not."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from dissect_handmade import Channels
from interpretorch.dissect.broden import BrodenDataset, encode_mask
from interpretorch.dissect.net2vec import net2vec


def _halves(root, n=10, size=8):
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        r0, c0 = rng.integers(0, 4, size=2)
        h, w = rng.integers(2, 4), 2 * rng.integers(1, 3)
        img = np.zeros((size, size, 3), np.uint8)
        img[r0:r0 + h, c0:c0 + w // 2, 0] = 255          # unit 0: left half of the thing
        img[r0:r0 + h, c0 + w // 2:c0 + w, 1] = 255      # unit 1: right half
        img[..., 2] = rng.integers(0, 60, size=(size, size))  # unit 2: faint noise
        mask = np.zeros((size, size), int)
        mask[r0:r0 + h, c0:c0 + w] = 1
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(encode_mask(mask)).save(root / "images" / f"{i}_o.png")
        rows.append([f"{i}.png", "train", size, size, size, size, f"{i}_o.png"])
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "split", "ih", "iw", "sh", "sw", "object"], *rows])
    (root / "category.csv").write_text("name\nobject\n")
    (root / "label.csv").write_text("number,name,category\n0,-,\n1,thing,object(10)\n")
    return root


def test_combination_beats_single_units(tmp_path, snapshot):
    ds = BrodenDataset(_halves(tmp_path / "d"), mean=(0, 0, 0), std=(1, 1, 1))
    model = Channels()
    snap = snapshot(model)
    (vec,) = net2vec(model, ds, "feat", quantile=0.1, steps=300, lr=0.1)
    assert vec.label == "thing" and vec.category == "object"
    assert vec.iou == pytest.approx(1.0)
    assert vec.unit in (0, 1) and vec.unit_iou < 0.7  # one half of the thing at best
    assert (vec.weights >= 0).all() and vec.weights[:2].min() > 2 * vec.weights[2]
    snap.assert_unchanged()


def test_needs_feature_maps(tmp_path):
    ds = BrodenDataset(_halves(tmp_path / "d"), mean=(0, 0, 0), std=(1, 1, 1))
    with pytest.raises(ValueError, match="feature maps"):
        net2vec(_Flat(), ds, "feat", steps=1)


class _Flat(Channels):
    def forward(self, x):
        return self.feat(x.mean(dim=(2, 3)))
