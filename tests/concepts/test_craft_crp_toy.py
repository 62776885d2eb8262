"""CRP on the shipped concept CNN: the channel most relevant for the class puts its relevance on the pasted patch."""
from __future__ import annotations

import pytest
import torch

from interpretorch.attribution.crp import conditional_relevance
from interpretorch.concepts.craft import map_energy_inside
from interpretorch.concepts.toy import PREPROCESS, make_concept_images

LAYER = "features.10"


@pytest.mark.numerics
@pytest.mark.parametrize("cls", [0, 1])
def test_the_most_relevant_channel_matters_inside_the_concept(toy, cls):
    """Measured over seeds 0-4 (``measure_craft_crp.py`` -> ``measured_craft_crp.jsonl``; the first 20 class
    images of each seed): the share of the positive input relevance, conditioned on each image's most relevant
    channel at features.10, that falls inside the pasted 16 px patch (1/9 of the 48 px image) averaged 0.70-0.79
    for stripes and 0.77-0.81 for dots (plain LRP: 0.55-0.70 and 0.78-0.82). Single images went as low as 0.04,
    so only the mean is asserted: above 0.6 for seed 0."""
    model, _ = toy
    test = make_concept_images(240, seed=5)
    idx = torch.nonzero(test.labels == cls).flatten()[:20]
    x, boxes = PREPROCESS.normalize(test.images[idx]), test.boxes[idx]
    every = conditional_relevance(model, x, cls, LAYER, [list(range(48))])
    top = every.channel_relevance.argmax(1)
    shares = [float(map_energy_inside(conditional_relevance(model, x[i:i + 1], cls, LAYER, [int(top[i])])
                                      .heatmaps[:, 0], boxes[i:i + 1])[0]) for i in range(len(idx))]
    assert sum(shares) / len(shares) > 0.6


@pytest.mark.numerics
def test_relevance_along_the_dots_cav_lies_on_the_dots(toy, toy_sets):
    """CRP conditioned on a TCAV direction: the dots CAV at features.10 (channel means, against 3 random sets).

    Measured for seeds 0-2 (the first 20 dots images of ``concept_sets(seed)``): the share of the relevance along
    the CAV inside the dots patch was 0.78-0.80 (plain LRP 0.79-0.81), and the relevance along it 2.7-3.3 per
    image, more than the whole layer's 2.3-2.9 (the other directions carry some negative relevance). Asserted for
    seed 0: share above 0.6 and relevance along the CAV above half the layer's."""
    from interpretorch.concepts.tcav import run_tcav

    model, _ = toy
    s = toy_sets
    res = run_tcav(model, s["class1"][:10], {"dots": s["concepts"]["dots"]}, s["randoms"][:3], [LAYER], 1,
                   features="mean")
    v = res.cavs.vectors[LAYER][[p[0] for p in res.cavs.pairs].index("dots")]
    test = s["test"]
    idx = torch.nonzero(test.labels == 1).flatten()[:20]
    r = conditional_relevance(model, PREPROCESS.normalize(test.images[idx]), 1, LAYER, [v, list(range(48))])
    assert float(map_energy_inside(r.heatmaps[:, 0], test.boxes[idx]).mean()) > 0.6
    assert float(r.concept_relevance[:, 0].mean()) > 0.5 * float(r.concept_relevance[:, 1].mean()) > 0
