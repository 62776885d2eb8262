"""Interventions on toy generators whose units draw known concepts: exact effects, unchanged models, bad input."""
from __future__ import annotations

import pytest
import torch

from gan_toys import toy_generator, toy_segmenter
from interpretorch.gan import dissect_generator, generate, intervene, sample_z


@pytest.fixture
def toy():
    g, s = toy_generator(), toy_segmenter()
    d = dissect_generator(g, s, "feat", s.class_names, z_shape=(3,), samples=20, quantile=0.5, batch_size=6)
    return g, s, d


def test_ablating_the_drawing_unit_removes_its_concept_and_others_do_not(toy, snapshot):
    g, s, d = toy
    snaps = [snapshot(g), snapshot(s)]
    r = intervene(g, s, d, "feat", "A", z_shape=(3,), k=1, samples=12, region=(0, 0, 4, 4), batch_size=5)
    top, rand, other = (a.to_dict() for a in r.ablations)
    assert top["units"] == [0] and top["fraction_before"] == 0.5  # A is half of every image
    assert top["removed"] == 1.0 and top["ace"] == -0.5 and top["ace_band95"] == [-0.5, -0.5]
    assert rand["kind"] == "random" and len(rand["units"]) == 1
    expected = 1.0 if rand["units"] == [0] else 0.0
    assert rand["removed"] == expected
    assert other["kind"] == "other:B" and other["units"] != [0] and other["removed"] == 0.0
    # insertion: unit 0 set high in the top-left quarter draws A there and nowhere else
    ins = r.insertion.to_dict()
    assert ins["fraction_new_inside_region"] == 1.0
    assert ins["region_covered_after"] == 1.0
    # the left or right half was A; the top-left quarter was A in the left-half samples only
    z = sample_z(12, (3,), 1)
    left = (z[:, 0] > 0).float()
    assert ins["new_pixels_per_sample"] == pytest.approx(float((1 - left).mean()) * 16)
    assert r.images["before"].shape == (8, 1, 8, 8) and r.masks["top"].sum() == 0
    for snap in snaps:
        snap.assert_unchanged()


def test_generate_sets_units_to_a_value_everywhere_or_in_a_region(toy):
    g, _, _ = toy
    z = sample_z(4, (3,), 0)
    plain = generate(g, z)
    assert torch.equal(generate(g, z, layer="feat", units=[1, 2], value=5.0), plain)  # units 1, 2 draw nothing
    full = generate(g, z, layer="feat", units=[0], value=3.0)
    assert torch.equal(full, torch.full_like(plain, 3.0))
    boxed = generate(g, z, layer="feat", units=[0], value=torch.tensor([7.0]), region=(2, 0, 8, 3))
    expect = plain.clone()
    expect[:, :, 0:3, 2:8] = 7.0
    assert torch.equal(boxed, expect)


def test_bad_requests_are_named(toy):
    g, s, d = toy
    with pytest.raises(ValueError, match="units"):
        intervene(g, s, d, "feat", "A", z_shape=(3,), k=4, samples=4)
    with pytest.raises(ValueError, match="unknown concept"):
        intervene(g, s, d, "feat", "C", z_shape=(3,), k=1, samples=4)
    with pytest.raises(ValueError, match="not dissected"):
        intervene(g, s, d, "out", "A", z_shape=(3,), k=1, samples=4)
    with pytest.raises(ValueError, match="inside the 8x8 image"):
        intervene(g, s, d, "feat", "A", z_shape=(3,), k=1, samples=4, region=(0, 0, 9, 4))
    with pytest.raises(ValueError, match="non-empty box"):
        intervene(g, s, d, "feat", "A", z_shape=(3,), k=1, samples=4, region=(4, 0, 4, 4))
    with pytest.raises(ValueError, match="outside layer"):
        generate(g, sample_z(2, (3,), 0), layer="feat", units=[3])
