"""The data randomization test: a SyntheticCNN fits permuted labels, is at chance on true ones, and its maps are
compared with the true-label model's (a small training set here; the shipped default is in the docstring)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from interpretorch.data.synthetic import make_localisation_set
from interpretorch.models.synthetic_cnn import CAM_LAYER, PREPROCESS, load_synthetic_cnn
from interpretorch.sanity import data_randomization
from interpretorch.sanity.data import (RandomLabelConfig, load_random_label_cnn, permuted_labels,
                                       save_random_label_cnn, train_random_label_cnn)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "synthetic_cnn.pt"
SMALL = RandomLabelConfig(n_train=64, n_test=400, batch_size=32, max_epochs=150)


@pytest.fixture(scope="module")
def random_run():
    return train_random_label_cnn(SMALL)


def test_permuted_labels_keep_the_class_counts():
    y = torch.tensor([0, 0, 1, 2, 3, 3, 3])
    p = permuted_labels(y, 0)
    assert torch.equal(torch.bincount(p, minlength=4), torch.bincount(y, minlength=4))
    assert torch.equal(p, permuted_labels(y, 0)) and not torch.equal(p, permuted_labels(y, 1))


@pytest.mark.numerics
def test_random_label_model_fits_its_labels_and_is_at_chance(random_run, tmp_path):
    r = random_run
    assert r.train_accuracy >= 0.95
    # 400 test images at chance 1/4: a binomial standard deviation of 0.022; the true-label model is far above.
    assert abs(r.test_accuracy - r.chance) < 0.1, r.test_accuracy
    assert 1 <= r.epochs <= SMALL.max_epochs
    # The checkpoint reads back.
    path = save_random_label_cnn(r, tmp_path / "rl.pt")
    model, info = load_random_label_cnn(path)
    assert info["train_accuracy"] == r.train_accuracy and RandomLabelConfig(**info["config"]) == SMALL
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), r.model.state_dict().values()))


def test_training_is_seeded():
    cfg = RandomLabelConfig(n_train=32, n_test=8, max_epochs=2, target_accuracy=0.01)
    a, b = train_random_label_cnn(cfg).model, train_random_label_cnn(cfg).model
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    c = train_random_label_cnn(RandomLabelConfig(n_train=32, n_test=8, max_epochs=2, target_accuracy=0.01,
                                                 label_seed=4)).model
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_unreachable_target_is_an_error():
    with pytest.raises(RuntimeError, match="below the target"):
        train_random_label_cnn(RandomLabelConfig(n_train=64, max_epochs=1, n_test=8))


def test_maps_of_the_random_label_model_against_the_true_label_model(random_run, snapshot):
    true_model = load_synthetic_cnn(FIXTURE).model
    test = make_localisation_set(8, seed=SMALL.test_seed, start=SMALL.n_test)
    x = PREPROCESS.normalize(test.images)
    snaps = [snapshot(true_model), snapshot(random_run.model)]
    res = data_randomization(true_model, random_run.model, x, ["gradient", "gradcam", "guided_backprop"],
                             layer=CAM_LAYER)
    for s in snaps:
        s.assert_unchanged()
    for m in res.methods:
        for metric in ("spearman_abs", "spearman", "ssim", "hog", "topk"):
            v = res.similarity[m][metric]
            assert v.shape == (8, 1) and torch.isfinite(v).any(), (m, metric)
        print(m, {k: round(float(torch.nanmean(v)), 3) for k, v in res.similarity[m].items()},
              res.verdicts[m].passes)
    # The maps explain the true-label model's classes, which it gets right on this set.
    assert (res.target == test.labels).float().mean() > 0.8
    # A model trained on noise cannot reproduce the class evidence of the trained one: its Grad-CAM maps are far
    # from the true-label model's (the paper's data test: Gradient and Grad-CAM change, Guided Backprop less so).
    assert float(torch.nanmean(res.similarity["gradcam"]["spearman_abs"])) < 0.5
