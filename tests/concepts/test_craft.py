"""CRAFT: the Sobol estimator against a brute-force variance decomposition, the layer check, the tail and
full-forward paths, recursion, and the deciding concept of the shipped concept CNN (measured over seeds 0-4)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from interpretorch.concepts.craft import (SAME_PREDICTION_WARN, craft, jansen_total, map_energy_inside,
                                          non_negative_layer, sobol_design, sobol_total_indices)
from interpretorch.attribution.crp import conditional_relevance
from interpretorch.concepts.toy import PREPROCESS, make_concept_images


def toy3(m: torch.Tensor) -> torch.Tensor:
    """Three concepts with an interaction (1 x 3) and a non-linear term in concept 2."""
    return m[:, 0] + 2 * m[:, 1] + 3 * m[:, 0] * m[:, 2] + torch.sin(6 * m[:, 1])


def brute_force_total(fn, k: int = 3, grid: int = 60) -> torch.Tensor:
    """Total-order indices E_{~i}[Var_i f] / Var f on a midpoint grid of the unit cube."""
    g = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    pts = torch.stack(torch.meshgrid(*[g] * k, indexing="ij"), -1)
    y = fn(pts.reshape(-1, k)).reshape([grid] * k)
    return torch.stack([y.var(dim=i, unbiased=False).mean() for i in range(k)]) / y.var(unbiased=False)


@pytest.mark.numerics
def test_sobol_total_indices_equal_brute_force_within_the_qmc_error():
    """With 1024 Sobol points the estimates of 20 scrambling seeds were within 0.0019 of the grid values (max
    abs); assert 0.01. With 64 points they were within 0.055, so the test also checks the error shrinks."""
    exact = brute_force_total(toy3)  # (0.619, 0.182, 0.265)
    errs = [float((sobol_total_indices(toy3, 3, 1024, seed=s) - exact).abs().max()) for s in range(5)]
    assert max(errs) <= 0.01
    coarse = [float((sobol_total_indices(toy3, 3, 64, seed=s) - exact).abs().max()) for s in range(5)]
    assert sum(errs) < sum(coarse)
    # an additive function: total = first-order = each term's share of the variance; an unused input gets 0
    st = sobol_total_indices(lambda m: m[:, 0] + 2 * m[:, 1], 3, 256)
    torch.testing.assert_close(st, torch.tensor([0.2, 0.8, 0.0], dtype=torch.float64), atol=1e-2, rtol=0)
    assert float(st[2]) == 0.0


def test_sobol_design_layout():
    m = sobol_design(2, 8, seed=1)
    assert m.shape == (32, 2) and (m >= 0).all() and (m <= 1).all()
    a, b, c1, c2 = m[:8], m[8:16], m[16:24], m[24:]
    torch.testing.assert_close(c1[:, 0], b[:, 0])
    torch.testing.assert_close(c1[:, 1], a[:, 1])
    torch.testing.assert_close(c2[:, 1], b[:, 1])
    with pytest.raises(ValueError, match="power of two"):
        sobol_design(2, 12)
    with pytest.raises(ValueError, match="not \\(k \\+ 2\\)"):
        jansen_total(torch.zeros(11), 3)


class NoChain(nn.Module):
    """A CNN whose forward is not a chain of children (so CRAFT falls back to a full forward)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.act(self.conv(x)).mean((2, 3)))


def test_layer_check_and_the_two_tail_paths(snapshot):
    model = NoChain().eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="negative activations.*next non-negative layer is 'act'"):
        non_negative_layer(model, x, "conv")
    assert non_negative_layer(model, x) == "act"
    snap = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = craft(model, x, lambda t: t, 1, "act", n_concepts=3, crops_per_image=4, nb_design=8)
        chained = craft(nn.Sequential(model.conv, model.act, nn.AdaptiveAvgPool2d(1), nn.Flatten(), model.head),
                        x, lambda t: t, 1, "1", n_concepts=3, crops_per_image=4, nb_design=8)
    snap.assert_unchanged()
    torch.testing.assert_close(torch.tensor([c.importance for c in full.concepts]),
                               torch.tensor([c.importance for c in chained.concepts]), rtol=1e-4, atol=1e-6)
    imps = [c.importance for c in full.concepts]
    assert imps == sorted(imps, reverse=True) and all(v >= 0 for v in imps)
    assert full.concepts[0].maps.shape == (6, 16, 16) and full.coefficients.shape[:2] == (6, 3)
    logit = craft(model, x, lambda t: t, 1, "act", n_concepts=3, crops_per_image=4, nb_design=8, score="logit")
    assert logit.options["score"] == "logit" and all(c.importance >= 0 for c in logit.concepts)
    with pytest.raises(ValueError, match="score must be"):
        craft(model, x, lambda t: t, 1, "act", score="margin")
    with pytest.raises(TypeError, match="one class"):
        craft(model, x, lambda t: t, "top1")
    with pytest.raises(ValueError, match="outside the model's 3 classes"):
        craft(model, x, lambda t: t, 5)


def test_map_energy_inside():
    maps = torch.zeros(2, 8, 8)
    maps[0, 2:4, 2:4] = 1.0
    maps[1] = 1.0
    boxes = torch.tensor([[2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 4.0, 4.0]])
    torch.testing.assert_close(map_energy_inside(maps, boxes), torch.tensor([1.0, 0.25], dtype=torch.float64))


LAYER = "features.10"


def _class_images(seed: int, cls: int, n: int = 20):
    test = make_concept_images(240, seed=5 + 1000 * seed)
    idx = torch.nonzero(test.labels == cls).flatten()[:n]
    return test.images[idx], test.boxes[idx]


@pytest.mark.numerics
def test_craft_finds_the_deciding_concept(toy, snapshot):
    """On the shipped concept CNN the concept whose maps lie on the pasted patch ranks first.

    Measured over seeds 0-4 and both classes (``measure_craft_crp.py`` -> ``measured_craft_crp.jsonl``; k = 6, the
    default 32 crops of 0.4-0.6 of the side per image, which hold one 16 px patch of the 48 px images): the deciding
    concept (largest mean share of its map mass inside the patch) ranked 1st by Sobol importance in 9 of 10 runs
    (8 of 10 with the earlier 8 crops per image). The other: seed 1 stripes, where stripes split by orientation
    into three NMF components (45/90, 0 and 135 degrees, on 9, 9 and 2 images), each important only on its own
    images, and a background concept ranks first. Its maps put 0.41-0.59 (stripes) and 0.58-0.63 (dots) of their
    mass inside the patch, which covers 1/9 of the image. Asserted for seed 2 stripes and seed 0 dots (importance
    margins to the next concept 0.79 and 0.82; seed 0 stripes' margin is 0.04, within the QMC error): first, a
    share above 0.25 (more than twice the patch's area), and the rebuilt activations keeping the model's class on
    at least 80 % of the images (measured 95 % and 95 %).

    Where the first concept mattered (CRP along its direction, epsilon-plus), measured with 8 crops per image over
    the same ten runs: its share of the positive input relevance inside the patch was 0.35-0.69 for stripes and
    0.54-0.80 for dots (0.54: seed 3, whose first concept was off the patch; there the dots concept carried 1.48
    of the layer's 2.93 relevance and the first -0.06), and the relevance along it 0.71-0.94 for stripes (the
    layer's 0.68-1.00) and 2.29-2.84 for the other dots runs (2.23-2.90). Asserted for the two runs above
    (measured with 32 crops 0.59 / 0.81; 0.69 of 0.68, 2.54 of 2.61): a share above 0.5 and more than half the
    layer's relevance."""
    model, _ = toy
    snap = snapshot(model)
    for seed, cls in ((2, 0), (0, 1)):
        images, boxes = _class_images(seed, cls)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = craft(model, images, PREPROCESS.normalize, cls, LAYER, n_concepts=6, scale=(0.4, 0.6),
                        show=len(images), seed=seed)
        share = [float(map_energy_inside(c.maps, boxes).mean()) for c in res.concepts]
        best = max(range(6), key=lambda j: share[j])
        assert best == 0, f"class {cls}: deciding concept ranked {best + 1}"
        assert share[best] > 0.25
        assert res.options["reconstruction"]["same_prediction"] >= SAME_PREDICTION_WARN
        # where the first concept mattered: CRP along its direction lies on the patch and carries the class's relevance
        rel = conditional_relevance(model, PREPROCESS.normalize(images), cls, LAYER, [res.concepts[0].direction])
        assert float(map_energy_inside(rel.heatmaps[:, 0], boxes).mean()) > 0.5
        assert float(rel.concept_relevance.mean()) > 0.5 * float(rel.channel_relevance.sum(1).mean()) > 0
    snap.assert_unchanged()
    j = res.to_json()
    assert j["method"] == "craft" and {"importance", "crops", "sub_concepts"} <= set(j["concepts"][0])


@pytest.mark.numerics
def test_concepts_that_change_the_prediction_are_flagged(toy):
    """Seed 3's dots images (``measure_craft_crp.py``): six concepts from 8 crops per image (the earlier default) of
    0.4-0.6 of the side rebuild features.10 with a relative error of 0.80, and the rebuilt activations give stripes
    on all 20 dots images (class probability 0.22 against the model's 0.93), so the importances explain another
    function: measured, the first-ranked concept has none of its map mass on the dots patch. CRAFT warns and the
    page carries a red flag; crops of 0.8-1.0 of the side keep the class on all 20 (error 0.42), eight concepts on
    19, the default 32 crops per image on 18 (``test_craft_crop_sample.py``), as the hint says."""
    from interpretorch.concepts.report import craft_answer

    model, _ = toy
    images, _ = _class_images(3, 1)
    with pytest.warns(UserWarning, match="keep the model's predicted class"):
        res = craft(model, images, PREPROCESS.normalize, 1, LAYER, n_concepts=6, scale=(0.4, 0.6), seed=3,
                    nb_design=8, crops_per_image=8)
    fid = res.options["reconstruction"]
    assert fid["same_prediction"] < SAME_PREDICTION_WARN and fid["reconstruction_score"] < 0.5 < fid["model_score"]
    _, flags = craft_answer(res.to_json(), images.shape[0])
    assert [f["code"] for f in flags if f["code"] == "unfaithful_reconstruction"] == ["unfaithful_reconstruction"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        wide = craft(model, images, PREPROCESS.normalize, 1, LAYER, n_concepts=6, scale=(0.8, 1.0), seed=3,
                     nb_design=8, crops_per_image=8)
    assert wide.options["reconstruction"]["same_prediction"] >= SAME_PREDICTION_WARN


def test_recursion_splits_a_concept_at_an_earlier_layer(toy):
    model, _ = toy
    images, _ = _class_images(0, 1, n=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = craft(model, images, PREPROCESS.normalize, 1, "features.13", n_concepts=3, nb_design=8,
                    recursive_layer=LAYER, sub_concepts=2, split=1, crops_per_image=6)
    parent = res.concepts[0]
    assert len(parent.sub_concepts) == 2 and all(s.layer == LAYER for s in parent.sub_concepts)
    assert parent.sub_concepts[0].importance >= parent.sub_concepts[1].importance >= 0
    assert parent.sub_concepts[0].maps.shape == parent.maps.shape
    assert not res.concepts[1].sub_concepts
    with pytest.raises(ValueError, match="must come before"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 concepts from 6 images rebuild features.10 poorly: warned, not tested here
        craft(model, images, PREPROCESS.normalize, 1, LAYER, n_concepts=3, nb_design=8,
              recursive_layer="features.13")
