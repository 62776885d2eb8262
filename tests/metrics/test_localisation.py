"""Pointing game and energy pointing game: hand-computed cases, Quantus, and the synthetic set with its CNN."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from interpretorch.attribution import layer_cams
from interpretorch.data.synthetic import make_localisation_set
from interpretorch.explanation import Explanation
from interpretorch.metrics import boxes_to_masks, energy_pointing_game, pointing_chance, pointing_game
from interpretorch.models.synthetic_cnn import load_synthetic_cnn

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_cnn.pt"


def one_hot_map(h: int, w: int, y: int, x: int) -> torch.Tensor:
    m = torch.zeros(1, h, w)
    m[0, y, x] = 1.0
    return m


def test_boxes_to_masks_pixel_convention():
    m = boxes_to_masks(torch.tensor([[1.0, 2.0, 4.0, 3.0]]), (5, 6))
    expect = torch.zeros(1, 5, 6, dtype=torch.bool)
    expect[0, 2, 1:4] = True
    assert torch.equal(m, expect)
    # Several boxes per image (a union), an image without boxes, and fractional coordinates (pixel centres).
    m = boxes_to_masks([[[0, 0, 1, 1], [4, 3, 6, 5]], [], [[0.6, 0.4, 1.6, 1.4]]], (5, 6))
    assert m[0].sum() == 1 + 4 and m[0, 0, 0] and m[0, 4, 5]
    assert m[1].sum() == 0
    assert m[2].nonzero().tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="x1 >= x0"):
        boxes_to_masks(torch.tensor([[3.0, 0.0, 1.0, 2.0]]), (4, 4))


def test_pointing_game_tolerance_is_euclidean():
    # Object: the single pixel (5, 9). Maximum at (5, 5): distance 4. At (8, 9)... (1, 5): distance 5 (3-4-5).
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 5, 9] = True
    straight = one_hot_map(12, 12, 5, 5)
    assert pointing_game(straight, masks=masks, tolerance=3).item() == 0.0
    assert pointing_game(straight, masks=masks, tolerance=4).item() == 1.0
    diagonal = one_hot_map(12, 12, 1, 6)  # dy = 4, dx = 3
    assert pointing_game(diagonal, masks=masks, tolerance=4).item() == 0.0
    assert pointing_game(diagonal, masks=masks, tolerance=5).item() == 1.0
    on = one_hot_map(12, 12, 5, 9)
    assert pointing_game(on, masks=masks, tolerance=0).item() == 1.0
    # Boxes work the same as their masks; default tolerance is 15 px.
    box = torch.tensor([[9.0, 5.0, 10.0, 6.0]])
    assert pointing_game(straight, boxes=box, tolerance=3).item() == 0.0
    assert pointing_game(one_hot_map(40, 40, 5, 30), boxes=box).item() == 0.0  # 21 px away
    assert pointing_game(one_hot_map(40, 40, 5, 24), boxes=box).item() == 1.0  # 15 px away


def test_pointing_game_ties_and_empty_objects():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 0, 0] = True
    m = torch.zeros(2, 4, 4)
    m[0, 0, 0] = m[0, 3, 3] = 1.0  # two maxima, one hits
    hits = pointing_game(m, masks=masks, tolerance=0)
    assert hits[0].item() == 0.5
    assert math.isnan(hits[1].item())  # no object in image 1
    # A constant map scores the chance level: the share of pixels within tolerance of the object.
    masks[1, 1:3, 1:3] = True
    flat = torch.ones(2, 4, 4)
    chance = pointing_chance(masks=masks, tolerance=1)
    assert torch.allclose(pointing_game(flat, masks=masks, tolerance=1), chance)
    assert chance.tolist() == [3 / 16, 12 / 16]


def test_pointing_game_resizes_maps_and_reduces_channels():
    # A 4 x 4 map whose maximum sits in the top-left cell, scored against 16 x 16 masks.
    low = torch.zeros(1, 4, 4)
    low[0, 0, 0] = 1.0
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, :4, :4] = True
    assert pointing_game(low, masks=masks, tolerance=0).item() == 1.0
    attr = torch.zeros(1, 3, 16, 16)
    attr[0, 1, 2, 2] = -5.0  # abs_sum: the strongest pixel is (2, 2)
    assert pointing_game(Explanation(attr, "gradient"), masks=masks, tolerance=0).item() == 1.0
    with pytest.raises(ValueError, match="exactly one"):
        pointing_game(low)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(low, masks=masks, tolerance=-1)


def test_energy_pointing_game_by_hand():
    m = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[-1.0, 2.0], [3.0, -4.0]]])
    box = torch.tensor([[1.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.0, 2.0]])  # the right column
    e = energy_pointing_game(m, boxes=box)
    assert e[0].item() == pytest.approx(6 / 10)
    assert e[1].item() == pytest.approx(2 / 5)  # negatives clipped: (2 + 0) / (2 + 3)
    assert torch.allclose(energy_pointing_game(7 * m, boxes=box), e)
    assert math.isnan(energy_pointing_game(torch.zeros(1, 2, 2), boxes=box[:1]).item())


def test_matches_quantus_localisation(quantus):
    # Quantus's PointingGame has no tolerance (a hit is a maximum on the mask): our tolerance=0.
    # Its AttributionLocalisation is the energy ratio; abs=False + positive_attributions=True is our clipping.
    g = torch.Generator().manual_seed(0)
    b, h, w = 10, 20, 20
    maps = torch.randn(b, h, w, generator=g)
    masks = torch.zeros(b, h, w)
    for i in range(b):
        y0, x0 = torch.randint(0, 12, (2,), generator=g).tolist()
        masks[i, y0:y0 + 8, x0:x0 + 8] = 1
    x = torch.randn(b, 1, h, w, generator=g).numpy()
    y = np.zeros(b, dtype=int)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(h * w, 2))
    pg = quantus.PointingGame(disable_warnings=True)
    theirs = pg(model=model, x_batch=x, y_batch=y, a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy(),
                device="cpu", channel_first=True)
    ours = pointing_game(maps, masks=masks, tolerance=0)
    assert np.array_equal(np.asarray(theirs, dtype=float), ours.numpy())
    assert 0 < ours.sum() < b  # some hits, some misses
    al = quantus.AttributionLocalisation(abs=False, positive_attributions=True, normalise=False,
                                         disable_warnings=True)
    theirs = al(model=model, x_batch=x, y_batch=y, a_batch=maps[:, None].numpy(), s_batch=masks[:, None].numpy(),
                device="cpu", channel_first=True)
    assert np.allclose(np.asarray(theirs), energy_pointing_game(maps, masks=masks).numpy(), atol=1e-6)


# ------------------------------------------------------------------ synthetic set + trained CNN


@pytest.fixture(scope="module")
def synthetic():
    """The trained CNN and 200 held-out synthetic images (a stream no training or validation image comes from)."""
    lm = load_synthetic_cnn(FIXTURE)
    data = make_localisation_set(200, seed=7)
    return lm, data


@pytest.mark.numerics
def test_gradcam_points_at_the_objects_and_random_maps_do_not(synthetic):
    lm, data = synthetic
    x = lm.preprocess.normalize(data.images)
    with torch.no_grad():
        acc = (lm.model(x).argmax(1) == data.labels).float().mean().item()
    assert acc >= 0.9
    exp = layer_cams(lm.model, x, ["gradcam"], target=data.labels, layer=lm.cam_layer)["gradcam"]
    tol = 4  # the paper's 15 px at 224 px, scaled to these 64 px images
    hits = pointing_game(exp, masks=data.masks, tolerance=tol)
    assert hits.mean().item() >= 0.8
    assert pointing_game(exp, boxes=data.boxes, tolerance=tol).mean().item() >= hits.mean().item()
    # A random map's maximum is a uniformly random pixel: it hits with the probability of landing
    # within the tolerance of the object. Check it stays within 3 standard errors of that chance.
    chance = pointing_chance(masks=data.masks, tolerance=tol)
    g = torch.Generator().manual_seed(0)
    rand = pointing_game(torch.rand(len(data), 64, 64, generator=g), masks=data.masks, tolerance=tol)
    se = math.sqrt((chance * (1 - chance)).sum().item()) / len(data)
    assert abs(rand.mean().item() - chance.mean().item()) <= 3 * se
    assert hits.mean().item() > chance.mean().item() + 0.5
    # Energy: Grad-CAM concentrates on the object far more than a random map does.
    e_cam = energy_pointing_game(exp, boxes=data.boxes).nanmean().item()
    e_rand = energy_pointing_game(torch.rand(len(data), 64, 64, generator=g), boxes=data.boxes).mean().item()
    box_area = ((data.boxes[:, 2] - data.boxes[:, 0]) * (data.boxes[:, 3] - data.boxes[:, 1]) / 64 ** 2).mean()
    assert e_rand == pytest.approx(box_area.item(), abs=0.02)
    assert e_cam > 2 * e_rand
