"""The shipped generator and segmenter: the paper's causal findings on them, segmenter quality, reproducible
training, and the no-argument command."""
from __future__ import annotations

import json

import pytest
import torch

from interpretorch.cli import main
from interpretorch.gan import dissect_generator, intervene, shipped_pair
from interpretorch.gan.models import IMAGE_SIZE, concept_targets, load_checkpoint, _weights_path
from interpretorch.gan.train import GANConfig, pixel_accuracy, same_weights, train_all

pytestmark = pytest.mark.numerics  # every test here depends on the shipped trained weights


@pytest.fixture(scope="module")
def pair():
    return shipped_pair()


@pytest.fixture(scope="module")
def dissection(pair):
    return dissect_generator(pair.generator, pair.segmenter, ["layer2"], pair.classes, categories=pair.categories,
                             z_shape=pair.z_shape, samples=300, batch_size=50)


def test_ablating_a_concepts_top_units_removes_it_and_random_units_do_not(pair, dissection, snapshot):
    snaps = [snapshot(pair.generator), snapshot(pair.segmenter)]
    r = intervene(pair.generator, pair.segmenter, dissection, "layer2", "disk", z_shape=pair.z_shape, k=20,
                  samples=100, batch_size=50)
    top, rand, other = (a.to_dict() for a in r.ablations)
    # Measured (torch 2.13 CPU, 300 dissection samples, 100 intervention samples, seed 1): disk is 2.68 % of
    # the pixels; its top 20 units of layer2 off remove 91.7 % of them (95 % bootstrap band 83.0-97.0 %,
    # ACE -0.0246 [-0.0324, -0.0167]); 20 random units remove 14.7 % [-8.3, 33.7] (ACE -0.0039 [-0.0101,
    # 0.0022]); grass's top 20 units add disk pixels (removed -90.5 %).
    assert top["removed"] >= 0.75
    assert top["removed_band95"][0] >= 0.6
    assert top["ace_band95"][1] < 0  # the band excludes no effect
    assert rand["removed"] <= 0.4
    assert top["removed"] - rand["removed"] >= 0.5
    assert rand["ace_band95"][0] <= 0 <= rand["ace_band95"][1]  # random units: no effect within the band
    assert other["removed"] < top["removed"] - 0.5
    # Insertion in the central quarter (25 % of the image): measured 75.4 % of the new disk pixels inside
    # (band 74.6-76.2 %), the region going from 5.5 % to 74.3 % disk.
    ins = r.insertion.to_dict()
    assert ins["region_share_of_image"] == 0.25
    assert ins["fraction_new_inside_region"] >= 0.6
    assert ins["region_covered_after"] >= 0.5 > 0.2 >= ins["region_covered_before"]
    for snap in snaps:
        snap.assert_unchanged()


def test_dissection_labels_shape_units(dissection):
    # Measured: 9 of the 96 units of layer2 are disk detectors and 6 cross detectors at IoU >= 0.04 (500 samples)
    s = dissection.layers["layer2"].summary()
    assert s["units"] == 96
    assert s["detectors_per_concept"].get("shape/disk", 0) + s["detectors_per_concept"].get("shape/cross", 0) >= 5
    assert set(dissection.classes) == {"brick", "grass", "gravel", "disk", "square", "triangle", "cross"}


def test_segmenter_segments_real_synthetic_images(pair):
    # Measured: 0.769 pixel accuracy on the 500 validation images of the training script (chance: 0.47 for
    # always "grass"); here the first 200 of them.
    x, y = concept_targets(1, GANConfig().seg_n_train, 200, IMAGE_SIZE)
    assert pixel_accuracy(pair.segmenter, x, y) >= 0.72


def test_shipped_weights_are_the_default_config_and_training_is_deterministic():
    for name in ("generator.pt", "segmenter.pt"):
        ck = load_checkpoint(_weights_path(name))
        assert GANConfig(**ck["config"]) == GANConfig()  # `python -m interpretorch.gan.train` makes them
    short = GANConfig(n_train=64, iters=3, batch_size=16, seg_n_train=32, seg_epochs=1, seg_batch_size=16)
    a, b = train_all(short, n_val=8), train_all(short, n_val=8)
    for name in ("generator.pt", "discriminator.pt", "segmenter.pt"):
        assert same_weights(a[name]["state_dict"], b[name]["state_dict"]) == []


def test_gandissect_without_arguments_uses_the_shipped_pair(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["gandissect", "--samples", "40", "--intervention-samples", "4", "--layers", "layer2",
                 "--batch-size", "40", "--report-units", "3", "--out", str(out)]) == 0
    inter = json.loads((out / "interventions.json").read_text())
    assert {i["concept"] for i in inter} <= set(shipped_pair().classes) and all(i["k"] == 20 for i in inter)
    assert (out / "layer2_tally.csv").exists() and (out / "index.html").exists()
    assert "layer2: " in capsys.readouterr().out
