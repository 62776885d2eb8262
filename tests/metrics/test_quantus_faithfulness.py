"""Quantus's faithfulness family (faithfulness correlation / estimate, monotonicity (+ correlation), pixel
flipping, region perturbation, selectivity, sensitivity-N, IROF): Quantus 0.6 on the same cases, hand-computed
cases where Quantus differs, and the batching rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interpretorch.metrics.perturbation import (curve_auc, draw_subsets, faithfulness_correlation,
                                                faithfulness_estimate, feature_baseline, irof, monotonicity,
                                                monotonicity_correlation, patch_labels, pearson, pixel_flipping,
                                                region_perturbation, selectivity, sensitivity_n, spearman)

from metric_models import Counting, LinearClassifier, LinearScore

SHAPE = (1, 12, 12)


@pytest.fixture
def case():
    """A linear 5-class model on one-channel 12 x 12 images (softmax makes the scores non-linear), 4 images and
    continuous maps (no ties, so Quantus's unstable argsort and our stable sort agree)."""
    model = LinearClassifier(SHAPE, classes=5, seed=3).eval()
    g = torch.Generator().manual_seed(11)
    x = torch.randn(4, *SHAPE, generator=g)
    maps = torch.randn(4, *SHAPE[1:], generator=g)
    y = model(x).argmax(1).numpy()
    return model, x, maps, y


def _quantus(metric, model, x, maps, y, **kw):
    return metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps[:, None].numpy(), device="cpu",
                  channel_first=True, **kw)


def _close(ours: torch.Tensor, theirs, rtol: float = 1e-5) -> None:
    theirs = np.asarray(theirs, dtype=np.float64)
    ours = ours.detach().double().numpy()
    assert ours.shape == theirs.shape
    assert np.allclose(ours, theirs, rtol=rtol, atol=1e-6 * max(1.0, np.abs(theirs).max())), \
        np.abs(ours - theirs).max()


def test_correlations_match_scipy():
    from scipy.stats import pearsonr, spearmanr

    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 20, generator=g, dtype=torch.float64)
    b = a + torch.randn(3, 20, generator=g, dtype=torch.float64)
    b[2, :10] = 1.0  # ties: average ranks
    for i in range(3):
        assert math.isclose(float(pearson(a, b)[i]), pearsonr(a[i], b[i])[0], rel_tol=1e-10)
        assert math.isclose(float(spearman(a, b)[i]), spearmanr(a[i], b[i])[0], rel_tol=1e-10)
    assert torch.isnan(pearson(torch.ones(1, 5), a[:1, :5])).all()


def test_baselines():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])
    assert feature_baseline(x, "black").unique().tolist() == [-2.0]
    assert feature_baseline(x, "white").unique().tolist() == [4.0]
    assert feature_baseline(x, "mean").unique().tolist() == [1.5]
    assert feature_baseline(x, 0.5).unique().tolist() == [0.5]
    with pytest.raises(ValueError, match="unknown baseline"):
        feature_baseline(x, "grey")


@pytest.mark.numerics
def test_faithfulness_correlation_matches_quantus(quantus, case):
    # Quantus draws np.random.choice(n, subset, replace=False) run by run, image by image, and then (building its
    # table of baselines, "uniform" among them) np.random.uniform(size=B): replay the same draws.
    model, x, maps, y = case
    runs, size = 12, 30
    np.random.seed(5)
    draws = []
    for _ in range(runs):
        draws.append(np.stack([np.random.choice(144, size, replace=False) for _ in range(4)]))
        np.random.uniform(size=4)
    draws = np.stack(draws)
    ours = faithfulness_correlation(model, x, maps, subsets=torch.from_numpy(draws).permute(1, 0, 2))
    np.random.seed(5)
    metric = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, return_aggregate=False,
                                             disable_warnings=True)
    _close(ours, _quantus(metric, model, x, maps, y))
    # Our own draws are replayable from the seed and do not depend on the chunking.
    a = faithfulness_correlation(model, x, maps, nr_runs=runs, subset_size=size, seed=2, batch_size=5)
    b = faithfulness_correlation(model, x, maps, nr_runs=runs, subset_size=size, seed=2, batch_size=64)
    assert torch.allclose(a, b, atol=1e-6)
    s = draw_subsets(4, 144, runs, size, seed=2)
    assert all(len(set(r.tolist())) == size for r in s.reshape(-1, size))


@pytest.mark.numerics
@pytest.mark.parametrize("step", [1, 8])
def test_faithfulness_estimate_matches_quantus(quantus, case, step):
    model, x, maps, y = case
    metric = quantus.FaithfulnessEstimate(features_in_step=step, disable_warnings=True)
    _close(faithfulness_estimate(model, x, maps, features_in_step=step), _quantus(metric, model, x, maps, y))


@pytest.mark.numerics
@pytest.mark.parametrize("step", [4, 12])
def test_monotonicity_correlation_matches_quantus(quantus, case, step):
    # Quantus's default baseline is "uniform": each call of its perturbation draws np.random.uniform(size=B) (one
    # value per image), step by step, sample by sample - replayed here as values (steps, samples, B).
    model, x, maps, y = case
    steps, samples = 144 // step, 3
    np.random.seed(7)
    values = torch.from_numpy(np.random.uniform(size=(steps, samples, 4)))
    np.random.seed(7)
    metric = quantus.MonotonicityCorrelation(features_in_step=step, nr_samples=samples, disable_warnings=True)
    theirs = _quantus(metric, model, x, maps, y)
    _close(monotonicity_correlation(model, x, maps, features_in_step=step, values=values), theirs)
    black = quantus.MonotonicityCorrelation(features_in_step=step, nr_samples=2, abs=False, perturb_baseline="black",
                                            disable_warnings=True)
    _close(monotonicity_correlation(model, x, maps, features_in_step=step, absolute=False, baseline="black"),
           _quantus(black, model, x, maps, y))


@pytest.mark.numerics
def test_pixel_flipping_matches_quantus(quantus, case, monkeypatch):
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6 calls np.trapz (gone in NumPy 2)
    model, x, maps, y = case
    curve = pixel_flipping(model, x, maps, features_in_step=4)
    _close(curve, _quantus(quantus.PixelFlipping(features_in_step=4, disable_warnings=True), model, x, maps, y))
    auc = _quantus(quantus.PixelFlipping(features_in_step=4, return_auc_per_sample=True, disable_warnings=True),
                   model, x, maps, y)
    _close(curve_auc(curve), auc)
    assert np.ptp(curve.numpy()) > 0.2


@pytest.mark.numerics
@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_region_perturbation_matches_quantus(quantus, case, order):
    # 12 is not a multiple of 5: Quantus pads (2 + 1 per side) and lays its patches over the padded image.
    model, x, maps, y = case
    metric = quantus.RegionPerturbation(patch_size=5, order=order, regions_evaluation=6, disable_warnings=True)
    _close(region_perturbation(model, x, maps, patch_size=5, order=order, regions_evaluation=6),
           _quantus(metric, model, x, maps, y))


@pytest.mark.numerics
@pytest.mark.parametrize("patch", [4, 5])
def test_selectivity_matches_quantus(quantus, case, patch):
    model, x, maps, y = case
    ours = selectivity(model, x, maps, patch_size=patch)
    theirs = _quantus(quantus.Selectivity(patch_size=patch, disable_warnings=True), model, x, maps, y)
    _close(ours, np.stack(theirs))


def test_patch_labels_by_hand():
    # 5 rows in patches of 2: padded by 0 above, 1 below -> rows 0-1, 2-3, 4 (+ pad).
    labels, n = patch_labels(5, 4, 2)
    assert n == 3 * 2
    assert labels[:, 0].tolist() == [0, 0, 2, 2, 4] and labels[0].tolist() == [0, 0, 1, 1]
    labels, n = patch_labels(4, 4, 3)  # pad 1 before (floor of 2 / 2), 1 after: padded columns 1..4
    assert n == 4 and labels[0].tolist() == [0, 0, 1, 1] and labels[:, 0].tolist() == [0, 0, 2, 2]


@pytest.mark.numerics
def test_sensitivity_n_matches_quantus(quantus, case):
    model, x, maps, y = case
    metric = quantus.SensitivityN(features_in_step=4, n_max_percentage=0.5, return_aggregate=False,
                                 disable_warnings=True)
    theirs = _quantus(metric, model, x, maps, y)
    _close(sensitivity_n(model, x, maps, features_in_step=4, n_max_percentage=0.5), theirs)


@pytest.mark.numerics
def test_irof_matches_quantus(quantus, case, monkeypatch):
    # A fixed baseline (0.0) on both sides: Quantus's "mean" is the mean of the whole batch's current inputs
    # (see test_irof_mean_is_per_image). The inputs are made positive so SLIC finds the same segments.
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)  # Quantus 0.6 calls np.trapz (gone in NumPy 2)
    model, x, maps, y = case
    x = (x - x.min()) / (x.max() - x.min())
    y = model(x).argmax(1).numpy()
    metric = quantus.IROF(perturb_baseline=0.0, return_aggregate=False, disable_warnings=True)
    theirs = _quantus(metric, model, x, maps, y)
    from interpretorch.metrics.perturbation import superpixels

    counts = [len(torch.unique(s)) for s in superpixels(x)]
    assert len(set(counts)) == 1  # same number of segments: Quantus's zero padding of shorter lists does not enter
    _close(irof(model, x, maps, baseline=0.0), theirs)


def test_irof_by_hand():
    # Two segments (left / right half) of a 1 x 2 image, score = x0 + x1 (class 0 of LinearScore), softmax off.
    # Left more relevant: remove left -> score x1, then both -> 0. Curve / clean = [x1 / s, 0];
    # IROF = 2 - (x1 / s + 0) / 2.
    model = LinearScore(torch.ones(1, 1, 2))
    x = torch.tensor([[[[3.0, 1.0]]]])
    segs = torch.tensor([[[0, 1]]])
    got = irof(model, x, torch.tensor([[[2.0, 1.0]]]), target=0, segments=segs, baseline=0.0, softmax=False)
    assert math.isclose(float(got), 2 - (1.0 / 4.0) / 2, rel_tol=1e-9)


def test_irof_mean_is_per_image():
    # The "mean" baseline is each image's own mean: an image's IROF does not depend on the others in the batch.
    model = LinearClassifier(SHAPE, classes=3, seed=1).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(3, *SHAPE, generator=g)
    maps = torch.rand(3, 12, 12, generator=g)
    segs = (torch.arange(144).reshape(12, 12) // 24).expand(3, -1, -1)
    both = irof(model, x, maps, segments=segs)
    alone = irof(model, x[:1], maps[:1], segments=segs[:1])
    assert math.isclose(float(both[0]), float(alone[0]), rel_tol=1e-6)


@pytest.mark.numerics
def test_monotonicity_quantus_never_changes_its_baseline(quantus, case):
    # Documented difference: Quantus 0.6's Monotonicity replaces features of the baseline image with the baseline
    # value again (perturb_func on x_baseline), so its inputs never change and every image scores True. Ours puts
    # x's features back (Arya et al. 2019). Fed a perturbation that inserts x's values, Quantus's loop agrees.
    model, x, maps, y = case
    default = _quantus(quantus.Monotonicity(features_in_step=4, disable_warnings=True), model, x, maps, y)
    assert default == [True] * 4
    flat = x.reshape(4, -1).numpy()

    def insert(arr, indices, **kwargs):
        out = arr.copy()
        out[np.arange(arr.shape[0])[:, None], indices] = flat[np.arange(arr.shape[0])[:, None], indices]
        return out

    fixed = _quantus(quantus.Monotonicity(features_in_step=4, perturb_func=insert, disable_warnings=True),
                     model, x, maps, y)
    ours = monotonicity(model, x, maps, features_in_step=4)
    assert ours.tolist() == [float(v) for v in fixed]
    curve = monotonicity(model, x, maps, features_in_step=4, return_curve=True)
    assert torch.allclose(curve[:, -1], torch.softmax(model(x), 1).max(1).values.double(), atol=1e-6)


def test_monotonicity_by_hand():
    # score = sum of pixels (class 0 logit); positive pixels added in any order never lower it -> 1;
    # a negative pixel added last (it has the highest attribution) lowers it -> 0.
    model = LinearScore(torch.ones(1, 1, 3))
    x = torch.tensor([[[[1.0, 2.0, 3.0]]], [[[1.0, 2.0, -3.0]]]])
    maps = torch.tensor([[[0.1, 0.2, 0.3]], [[0.1, 0.2, 0.3]]])
    got = monotonicity(model, x, maps, target=0, baseline=0.0, softmax=False)
    assert got.tolist() == [1.0, 0.0]


def test_rows_go_through_the_model_together():
    # Every step of every image is one row; rows of all images share the model calls, batch_size at a time.
    model = Counting(LinearClassifier(SHAPE, classes=3).eval())
    g = torch.Generator().manual_seed(4)
    x, maps = torch.randn(3, *SHAPE, generator=g), torch.rand(3, 12, 12, generator=g)
    a = pixel_flipping(model, x, maps, features_in_step=8, batch_size=10)
    assert model.rows == 3 + 3 * 18 and model.calls == 1 + math.ceil(54 / 10)
    b = pixel_flipping(model, x, maps, features_in_step=8, batch_size=64)
    assert torch.allclose(a, b, atol=1e-6)
    model.rows = 0
    region_perturbation(model, x, maps, patch_size=4, regions_evaluation=5, clean=model.model(x))
    assert model.rows == 3 * 5  # a given clean pass is reused


def test_errors(case):
    model, x, maps, _ = case
    with pytest.raises(ValueError, match="features_in_step"):
        pixel_flipping(model, x, maps, features_in_step=0)
    with pytest.raises(ValueError, match="order"):
        region_perturbation(model, x, maps, order="up")
    with pytest.raises(ValueError, match="subset_size"):
        faithfulness_correlation(model, x, maps, subset_size=1000)
    with pytest.raises(ValueError, match="subsets"):
        faithfulness_correlation(model, x, maps, subsets=torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2"):
        sensitivity_n(model, x[:1], maps[:1])
    with pytest.raises(ValueError, match="segments"):
        irof(model, x, maps, segments=torch.zeros(4, 5, 5, dtype=torch.long))
