"""Explanation: upsampling, normalisation, overlays, notebook rendering and saving."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch import Explanation, explain
from interpretorch.explanation import normalize_maps, reduce_channels, upsample


def test_upsample_is_bilinear_and_keeps_raw(tiny, images):
    e = explain(tiny, images, "gradcam", layer="features")
    assert e.raw.shape == (4, 8, 8) and e.maps.shape == (4, 32, 32)
    ref = torch.nn.functional.interpolate(e.raw[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(e.maps, ref)


def test_normalize_maps_per_image():
    m = torch.tensor([[[0.0, 2.0], [4.0, 1.0]], [[3.0, 3.0], [3.0, 3.0]]])
    n = normalize_maps(m)
    assert torch.allclose(n[0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]))
    assert torch.equal(n[1], torch.zeros(2, 2))  # a constant map carries no ranking: zeros, not NaN


def test_channel_reductions():
    m = torch.tensor([[[[1.0]], [[-3.0]], [[2.0]]]])  # (1, 3, 1, 1)
    assert reduce_channels(m, "abs_sum").item() == 6.0
    assert reduce_channels(m, "sum").item() == 0.0
    assert reduce_channels(m, "max_abs").item() == 3.0
    with pytest.raises(ValueError, match="abs_sum"):
        reduce_channels(m, "mean")


def test_overlay_repr_png_and_save_roundtrip(tiny, images, tmp_path):
    e = explain(tiny, images, "gradcam++", layer="features")
    rgb = (images - images.min()) / (images.max() - images.min())
    ov = e.overlay(rgb, cmap="viridis", alpha=0.4)
    assert ov.shape == (4, 32, 32, 3) and ov.dtype == np.uint8
    # Where the map is zero the overlay is the image blended with the colormap's lowest colour.
    with pytest.raises(ValueError, match="2 images for 4 maps"):
        e.overlay(rgb[:2])
    png = e._repr_png_()
    assert Image.open(io.BytesIO(png)).size == (32 * 4, 32)
    path = e.save(tmp_path / "e.pt")
    back = Explanation.load(path)
    assert torch.equal(back.maps, e.maps) and back.method == "gradcam++" and torch.equal(back.target, e.target)
    e.save(tmp_path / "e.png")
    assert Image.open(tmp_path / "e.png").size == (32, 32)
    with pytest.raises(ValueError, match=".jpg"):
        e.save(tmp_path / "e.jpg")
