"""Quantus's localisation family (attribution localisation, top-k intersection, relevance rank / mass accuracy,
AUC): Quantus 0.6 on the same maps and masks, hand-computed cases, and boxes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interpretorch.metrics.localisation import (attribution_localisation, localisation_auc, relevance_mass_accuracy,
                                                relevance_rank_accuracy, top_k_intersection)

OURS = {"AttributionLocalisation": attribution_localisation, "TopKIntersection": top_k_intersection,
        "RelevanceRankAccuracy": relevance_rank_accuracy, "RelevanceMassAccuracy": relevance_mass_accuracy,
        "AUC": localisation_auc}


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(3)
    b, h, w = 5, 14, 14
    maps = torch.randn(b, h, w, generator=g, dtype=torch.float64)
    # Every map's largest |value| is 1: Quantus's batch-wide normalisation equals each image's own.
    maps = maps / maps.reshape(b, -1).abs().amax(1)[:, None, None]
    masks = torch.zeros(b, h, w, dtype=torch.bool)
    for i in range(b):
        y0, x0 = int(torch.randint(0, 7, (1,), generator=g)), int(torch.randint(0, 7, (1,), generator=g))
        masks[i, y0:y0 + 5 + i, x0:x0 + 6] = True
    return maps, masks


@pytest.mark.numerics
@pytest.mark.parametrize("name,kw,ours_kw", [
    ("AttributionLocalisation", {}, {}),
    ("AttributionLocalisation", {"abs": False, "positive_attributions": True}, {"absolute": False, "positive": True}),
    ("TopKIntersection", {"k": 30}, {"k": 30}),
    ("TopKIntersection", {"k": 30, "concept_influence": True}, {"k": 30, "concept_influence": True}),
    ("RelevanceRankAccuracy", {}, {}),
    ("RelevanceMassAccuracy", {}, {}),
    ("AUC", {}, {}),
])
def test_matches_quantus(quantus, case, name, kw, ours_kw):
    maps, masks = case
    x = np.zeros((maps.shape[0], 1, *maps.shape[1:]), dtype=np.float32)
    metric = getattr(quantus, name)(disable_warnings=True, **kw)
    theirs = np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(len(x), int), a_batch=maps[:, None].numpy(),
                               s_batch=masks[:, None].numpy().astype(np.float32), channel_first=True), np.float64)
    ours = OURS[name](maps, masks=masks, **ours_kw).numpy()
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(theirs)
    assert ok.sum() >= 3
    assert np.allclose(ours[ok], theirs[ok], rtol=1e-5, atol=1e-9)
    assert np.ptp(theirs[ok]) > 0


def test_by_hand():
    # 1 x 4 image, object = the first two pixels; map [4, 1, 3, 2].
    maps = torch.tensor([[[4.0, 1.0, 3.0, 2.0]]])
    obj = torch.tensor([[[True, True, False, False]]])
    assert math.isclose(float(relevance_mass_accuracy(maps, masks=obj)), 5 / 10)
    assert math.isclose(float(attribution_localisation(maps, masks=obj)), 5 / 10, rel_tol=1e-8)
    assert math.isclose(float(attribution_localisation(maps, masks=obj, weighted=True)), 5 / 10 * 2 / 4,
                        rel_tol=1e-8)
    # top-2 pixels are 4 (on) and 3 (off)
    assert float(relevance_rank_accuracy(maps, masks=obj)) == 0.5
    assert float(top_k_intersection(maps, masks=obj, k=1)) == 1.0
    assert float(top_k_intersection(maps, masks=obj, k=2, concept_influence=True)) == 0.5 * 4 / 2
    # pairs (on, off): (4,3) (4,2) win, (1,3) (1,2) lose -> AUC 1/2; ties count one half
    assert float(localisation_auc(maps, masks=obj)) == 0.5
    assert float(localisation_auc(torch.ones(1, 1, 4), masks=obj)) == 0.5
    # No object: NaN; boxes work like masks.
    assert torch.isnan(relevance_mass_accuracy(maps, masks=torch.zeros(1, 1, 4, dtype=torch.bool))).all()
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0]])
    assert float(relevance_rank_accuracy(maps, boxes=boxes)) == 0.5
    with pytest.raises(ValueError, match="k must be"):
        top_k_intersection(maps, masks=obj, k=0)


@pytest.mark.numerics
def test_quantus_weighted_uses_the_batch_from_its_third_image(quantus, case):
    # Documented difference: Quantus's weighted attribution localisation divides the object's size by
    # x_batch[2:].size (3 images of 14 x 14 here) instead of one image's 14 x 14 pixels.
    maps, masks = case
    x = np.zeros((5, 1, 14, 14), np.float32)
    metric = quantus.AttributionLocalisation(weighted=True, disable_warnings=True)
    theirs = np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(5, int), a_batch=maps[:, None].numpy(),
                               s_batch=masks[:, None].numpy().astype(np.float32), channel_first=True), np.float64)
    ours = attribution_localisation(maps, masks=masks, weighted=True).numpy()
    ok = ~np.isnan(theirs)
    assert np.allclose(ours[ok] / 3, theirs[ok], rtol=1e-5)


def test_evaluate_runs_the_family_with_objects():
    from interpretorch.attribution import layer_cams
    from interpretorch.metrics import evaluate
    from interpretorch.models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.randn(2, 3, 16, 16)
    exps = layer_cams(model, x, ["gradcam"], layer="features")
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:10, 3:12] = True
    res = evaluate(model, x, exps, metrics="localisation", masks=masks, top_k_intersection={"k": 20})
    got = set(res["gradcam"]) - {"target"}
    assert got == {"pointing_game", "energy_pointing_game", "attribution_localisation", "top_k_intersection",
                   "relevance_rank_accuracy", "relevance_mass_accuracy", "localisation_auc", "focus"}
    want = top_k_intersection(exps["gradcam"], masks=masks, k=20)
    assert res["gradcam"]["top_k_intersection"]["per_image"] == pytest.approx(want.tolist())
