"""Concept discovery on the ground-truth model: the deciding concept is found, ranked high, and located."""
from __future__ import annotations

import pytest
import torch

from interpretorch.concepts.discovery import _keep_cluster, ace, nmf_concepts, segment_patches
from interpretorch.concepts.toy import PREPROCESS

LAYER = "features.10"


def _centred_in_box(concept, boxes) -> float:
    hits = 0
    for p in concept.patches:
        b = boxes[p["image"]]
        x0, y0, x1, y1 = p["box"]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hits += bool(b[0] <= cx < b[2] and b[1] <= cy < b[3])
    return hits / len(concept.patches)


@pytest.fixture(scope="module")
def class0(toy_sets):
    test = toy_sets["test"]
    idx = torch.nonzero(test.labels == 0).flatten()[:20]
    return test.images[idx], test.boxes[idx]


@pytest.mark.numerics
def test_nmf_discovers_the_deciding_concept(toy, class0, snapshot):
    """One of the three most important NMF concepts lies on the stripes, and concepts elsewhere matter less.

    Measured on the shipped model over seeds 0-4 (``measure_margins.py``: the first 20 class-0 images of
    ``concept_sets(seed)``, ``nmf_concepts(seed=seed)``): that concept's patches were all centred in the stripes
    patch (assert 75%), its importance was at least 0.18 and every concept lying elsewhere had importance at most
    -0.03 (assert > 0 and below it). Its TCAV score ranged 0.22-1.0, significant for seeds 0 and 4 only, so
    its significance is not asserted."""
    model, _ = toy
    images, boxes = class0
    snap = snapshot(model)
    res = nmf_concepts(model, images, PREPROCESS.normalize, LAYER, 0, n_concepts=6, seed=0)
    snap.assert_unchanged()
    top3 = res.concepts[:3]
    best = max(top3, key=lambda c: _centred_in_box(c, boxes))
    assert _centred_in_box(best, boxes) >= 0.75
    assert best.importance > 0
    # importance is ranked, and concepts that lie elsewhere matter less
    imps = [c.importance for c in res.concepts]
    assert imps == sorted(imps, reverse=True)
    assert all(c.importance < best.importance for c in res.concepts if _centred_in_box(c, boxes) < 0.25)
    j = res.to_json()
    assert {"image", "box"} <= set(j["concepts"][0]["patches"][0])
    assert {"importance", "score", "p_value", "significant"} <= set(j["concepts"][0])


@pytest.mark.numerics
def test_ace_discovers_the_deciding_concept(toy, class0):
    """ACE's segments cluster into a concept that lies on the stripes.

    Measured on the shipped model over seeds 0-4 (as for NMF, ``ace(seed=seed)``): the best concept had at least
    7 of its 8 patches centred in the stripes patch (assert 6 of 8). Its rank is not asserted: ACE ranks by TCAV
    score, and at this layer several background clusters score 1.0 too, so the stripes concept came 1st to 10th
    of 11-13 (in the first three for seeds 1 and 3 only)."""
    model, _ = toy
    images, boxes = class0
    res = ace(model, images, PREPROCESS.normalize, LAYER, 0, resolutions=(9, 16, 25), compactness=200.0,
              n_clusters=15, seed=0)
    assert max(_centred_in_box(c, boxes) for c in res.concepts) >= 0.75
    for c in res.concepts:
        assert 0 <= c.p_value <= 1 and c.examples is not None and len(c.patches) <= 8


def test_segments_are_gray_filled_and_boxed():
    img = torch.zeros(1, 3, 32, 32)
    img[:, 0, 8:24, 8:24] = 1.0  # a red square on black
    p = segment_patches(img, (4,), compactness=20.0, min_area=0.01)
    assert len(p.images) >= 2
    assert ((p.boxes[:, 2] > p.boxes[:, 0]) & (p.boxes[:, 3] > p.boxes[:, 1])).all()
    assert p.images.shape[1:] == (3, 32, 32)
    # ACE's rules for keeping a cluster
    assert _keep_cluster(5, 11, 20) and not _keep_cluster(3, 3, 20) and _keep_cluster(11, 3, 20)
    with pytest.raises(ValueError, match="expected"):
        segment_patches(torch.zeros(3, 8, 8))


def test_nmf_needs_non_negative_layer(tiny):
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="negative activations"):
        nmf_concepts(tiny, x, lambda t: t, "features.0", 0)
