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
