"""Average Drop / Increase / Win, Deletion / Insertion and ROAD: hand-computed cases and Quantus."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interpretorch.explanation import Explanation
from interpretorch.metrics import (LinearImputer, confidence, deletion, insertion, noisy_linear_imputation, road,
                                   win_percentage)
from interpretorch.metrics._common import gaussian_blur, step_counts
from interpretorch.models import TinyCNN

from metric_models import Counting, LinearClassifier, LinearScore


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ------------------------------------------------------------------ Average Drop / Increase / Win


def test_confidence_by_hand():
    # Image 0: x = [[1, 2], [3, 4]], map [[0, 1], [2, 3]] -> normalised [[0, 1/3], [2/3, 1]].
    # Y = 10, O = 2/3 + 2 + 4 = 20/3: drop = (10 - 20/3) / 10 = 1/3, no increase.
    # Image 1: x = [[-4, 1], [1, 4]], map [[0, 1], [1, 2]] -> [[0, .5], [.5, 1]]: Y = 2, O = 5 > Y.
    model = LinearScore(torch.ones(1, 2, 2))
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[-4.0, 1.0], [1.0, 4.0]]]])
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[0.0, 1.0], [1.0, 2.0]]])
    c = confidence(model, x, maps, target=0, softmax=False)
    assert torch.allclose(c.clean, torch.tensor([10.0, 2.0]))
    assert torch.allclose(c.masked, torch.tensor([20 / 3, 5.0]))
    assert torch.allclose(c.drop, torch.tensor([1 / 3, 0.0]))
    assert c.increase.tolist() == [0.0, 1.0]
    assert c.average_drop == pytest.approx(100 / 6, rel=1e-6)
    assert c.increase_in_confidence == pytest.approx(50.0)
    # Post-softmax (Score-CAM's variant): two logits [s, 0] give p = sigmoid(s).
    p = confidence(model, x, maps, target=0)
    y, o = sigmoid(10.0), sigmoid(20 / 3)
    assert p.drop[0].item() == pytest.approx((y - o) / y, rel=1e-4)  # float32 probabilities near 1
    assert p.drop[1].item() == 0.0 and p.increase.tolist() == [0.0, 1.0]


def test_confidence_baseline_and_logit_nan():
    # baseline + map * (x - baseline): with baseline 1 the unmasked pixel keeps its value 1 wherever map = 0.
    model = LinearScore(torch.ones(1, 1, 2))
    x = torch.tensor([[[[3.0, 5.0]]]])
    c = confidence(model, x, torch.tensor([[[0.0, 1.0]]]), target=0, softmax=False, baseline=1.0)
    assert c.masked.item() == pytest.approx(1.0 + 5.0)
    # A non-positive clean logit makes the relative drop undefined: NaN, ignored by the mean.
    neg = torch.tensor([[[[-3.0, 1.0]]], [[[3.0, 5.0]]]])
    c = confidence(model, neg, torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]]), target=0, softmax=False)
    assert math.isnan(c.drop[0].item())
    assert c.average_drop == pytest.approx(100 * (8 - 3) / 8)


def test_win_percentage_shares_ties():
    drops = {"a": torch.tensor([0.1, 0.5, 0.2, float("nan")]), "b": torch.tensor([0.2, 0.5, 0.1, 0.3])}
    w = win_percentage(drops)
    assert w["a"].tolist() == [100.0, 50.0, 0.0, 0.0]
    assert w["b"].tolist() == [0.0, 50.0, 100.0, 100.0]


# ------------------------------------------------------------------ Deletion / Insertion


def test_step_counts():
    assert step_counts(4, 1).tolist() == [0, 1, 2, 3, 4]
    assert step_counts(4, 3).tolist() == [0, 3, 4]
    assert step_counts(4, 0.5).tolist() == [0, 2, 4]
    assert step_counts(50176, 0.01).numel() == 101
    assert step_counts(10, 0.3).tolist() == [0, 2, 5, 8, 10]  # ceil(1 / 0.3) = 4 steps
    with pytest.raises(ValueError, match="fractional step"):
        step_counts(4, 1.5)
    with pytest.raises(ValueError, match="positive"):
        step_counts(4, 0)


def test_deletion_and_insertion_by_hand():
    # Logit = [[1, 2], [3, 4]] . x with x = 1; the map deletes pixel (0, 0) first, then (0, 1), ...
    model = LinearScore(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
    x = torch.ones(1, 1, 2, 2)
    maps = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    d = deletion(model, x, maps, target=0, step=1, softmax=False, substrate="zeros")
    assert d.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d.scores[0].tolist() == [10.0, 9.0, 7.0, 4.0, 0.0]
    assert d.auc.item() == pytest.approx(0.25 * (9.5 + 8 + 5.5 + 2))
    ins = insertion(model, x, maps, target=0, step=1, softmax=False, substrate="zeros")
    assert ins.scores[0].tolist() == [0.0, 1.0, 3.0, 6.0, 10.0]
    assert ins.auc.item() == pytest.approx(3.75)
    # Two pixels per step (a 0.5 fraction), and the mean substrate (2.5 * sum(w) / 4 per pixel... of x = 1: 1).
    d2 = deletion(model, x, maps, target=0, step=0.5, softmax=False)
    assert d2.scores[0].tolist() == [10.0, 7.0, 0.0]
    dm = deletion(model, 2 * x, maps, target=0, step=0.5, softmax=False, substrate="mean")
    assert dm.scores[0].tolist() == [20.0, 20.0, 20.0]
    d = d.to_dict()
    assert d["value"] == pytest.approx(6.25) and d["curve"] == [10.0, 9.0, 7.0, 4.0, 0.0]


def test_ties_delete_in_raster_order():
    model = LinearScore(torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
    d = deletion(model, torch.ones(1, 1, 2, 2), torch.zeros(1, 2, 2), target=0, step=1, softmax=False)
    assert d.scores[0].tolist() == [10.0, 9.0, 7.0, 4.0, 0.0]


def test_insertion_starts_from_blur_and_ends_clean():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.randn(2, 3, 24, 24)
    maps = torch.rand(2, 24, 24)
    ins = insertion(model, x, maps, step=0.25)
    with torch.no_grad():
        p_clean = model(x).softmax(1)
        idx = p_clean.argmax(1)
        p_blur = model(gaussian_blur(x, 5.0, 11)).softmax(1)
    assert torch.allclose(ins.scores[:, 0], p_blur.gather(1, idx[:, None])[:, 0], atol=1e-6)
    assert torch.allclose(ins.scores[:, -1], p_clean.gather(1, idx[:, None])[:, 0], atol=1e-6)


def test_gaussian_blur_matches_scipy():
    from scipy.ndimage import correlate1d

    x = torch.randn(1, 2, 20, 17, dtype=torch.float64)
    t = np.arange(-5, 6)
    k = np.exp(-0.5 * (t / 5.0) ** 2)
    k /= k.sum()
    ref = correlate1d(correlate1d(x.numpy(), k, axis=2, mode="mirror"), k, axis=3, mode="mirror")
    assert np.allclose(gaussian_blur(x, 5.0, 11).numpy(), ref, atol=1e-12)


def test_deletion_matches_quantus_pixel_flipping(quantus):
    # Quantus flips features (channel values); with one input channel a feature is a pixel, and
    # 'features_in_step' must divide H * W. Same order (descending map), same substrate (0.0), same
    # softmax scores. Protocol difference: Quantus's curve starts after the first step (ours keeps
    # the clean score at x = 0) and its AUC is np.trapz with dx = 1 over those points.
    model = LinearClassifier((1, 16, 16), classes=5).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 16, 16, generator=g)
    maps = torch.rand(4, 16, 16, generator=g)
    ours = deletion(model, x, maps, step=8, substrate=0.0)
    y = model(x).argmax(1).numpy()
    metric = quantus.PixelFlipping(features_in_step=8, perturb_baseline=0.0, disable_warnings=True)
    theirs = np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps[:, None].numpy(),
                               softmax=True, device="cpu", channel_first=True))
    assert theirs.shape == (4, 32)
    assert np.allclose(ours.scores[:, 1:].numpy(), theirs, atol=1e-6)
    assert np.ptp(theirs) > 0.2  # the curves move: the comparison is not between two flat lines
    np_auc = np.trapezoid(np.concatenate([ours.scores[:, :1].numpy(), theirs], 1), dx=1 / 32, axis=1)
    assert np.allclose(ours.auc.numpy(), np_auc, atol=1e-6)


def test_batching_and_forward_count():
    # The clean score is computed once per image; each step is one image row; chunking does not matter.
    torch.manual_seed(1)
    base = TinyCNN(num_classes=3).eval()
    x = torch.randn(5, 3, 16, 16)
    maps = torch.rand(5, 16, 16)
    model = Counting(base)
    d_all = deletion(model, x, maps, step=0.1, batch_size=64)
    assert model.rows == 5 + 5 * 10 and model.calls == 1 + 1
    model.rows = model.calls = 0
    d_small = deletion(model, x, maps, step=0.1, batch_size=7)
    assert model.rows == 55 and model.calls == 1 + math.ceil(50 / 7)
    assert torch.allclose(d_all.scores, d_small.scores, atol=1e-6)
    clean = base(x)
    model.rows = 0
    deletion(model, x, maps, step=0.1, clean=clean)
    assert model.rows == 50  # a given clean pass is reused


def test_channel_maps_and_explanations():
    torch.manual_seed(2)
    model = TinyCNN(num_classes=3).eval()
    x = torch.randn(2, 3, 16, 16)
    attr = torch.randn(2, 3, 16, 16)
    e = Explanation(maps=attr, method="gradient")
    a = deletion(model, x, e, step=0.25)
    b = deletion(model, x, attr.abs().sum(1), step=0.25)
    assert torch.allclose(a.scores, b.scores)
    # Layer-resolution maps are resized to the input.
    low = torch.rand(2, 4, 4)
    c = deletion(model, x, low, step=0.25)
    assert c.scores.shape == (2, 5)


def test_errors_name_the_problem():
    model = TinyCNN(num_classes=3).eval()
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="3 maps for 2 images"):
        deletion(model, x, torch.rand(3, 8, 8))
    with pytest.raises(ValueError, match="unknown substrate"):
        deletion(model, x, torch.rand(2, 8, 8), substrate="noise")
    with pytest.raises(ValueError, match="NaN"):
        insertion(model, x, torch.full((2, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="percentages"):
        road(model, x, torch.rand(2, 8, 8), percentages=[50, 100])
    with pytest.raises(ValueError, match="batch_size"):
        deletion(model, x, torch.rand(2, 8, 8), batch_size=0)


def test_metrics_leave_the_model_unchanged(snapshot):
    torch.manual_seed(3)
    model = TinyCNN(num_classes=3)
    model.train()
    model.features[0].weight.requires_grad_(False)
    snap = snapshot(model)
    x = torch.randn(2, 3, 16, 16)
    maps = torch.rand(2, 16, 16)
    confidence(model, x, maps)
    deletion(model, x, maps, step=0.25)
    insertion(model, x, maps, step=0.25)
    road(model, x, maps, percentages=[50])
    snap.assert_unchanged()
    assert model.training


# ------------------------------------------------------------------ ROAD


def test_imputation_by_hand():
    x = torch.arange(9.0).reshape(1, 3, 3)
    # Centre removed: the weighted mean of its 8 neighbours (1/6 direct, 1/12 diagonal; they sum to 1).
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    out = noisy_linear_imputation(x, centre, noise=0.0)
    expect = (1 + 3 + 5 + 7) / 6 + (0 + 2 + 6 + 8) / 12
    assert out[0, 1, 1].item() == pytest.approx(expect)
    assert torch.equal(out[0][~centre], x[0][~centre])
    # Corner removed: only 3 neighbours are in the image, so their weights are renormalised.
    corner = torch.zeros(3, 3, dtype=torch.bool)
    corner[0, 0] = True
    out = noisy_linear_imputation(x, corner, noise=0.0)
    assert out[0, 0, 0].item() == pytest.approx((1 / 6 + 3 / 6 + 4 / 12) / (5 / 12))
    # Two adjacent unknowns u = (0, 0), v = (0, 1) couple: (5/12) u - v/6 = 3/6 + 4/12 and
    # (8/12) v - u/6 = 2/6 + 4/6 + 3/12 + 5/12 (known neighbours of v: (0,2), (1,1), (1,0), (1,2)).
    two = torch.zeros(3, 3, dtype=torch.bool)
    two[0, :2] = True
    a = np.array([[5 / 12, -1 / 6], [-1 / 6, 8 / 12]])
    b = np.array([3 / 6 + 4 / 12, 2 / 6 + 4 / 6 + 3 / 12 + 5 / 12])
    u, v = np.linalg.solve(a, b)
    out = noisy_linear_imputation(x, two, noise=0.0)
    assert out[0, 0, 0].item() == pytest.approx(u) and out[0, 0, 1].item() == pytest.approx(v)


def test_imputation_noise_is_seeded_and_sized():
    x = torch.randn(3, 20, 20)
    removed = torch.rand(20, 20) < 0.5
    imp = LinearImputer(removed)
    plain = imp(x)
    a = imp(x, 0.5, torch.Generator().manual_seed(0))
    b = imp(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    resid = (a - plain)[:, removed]
    assert resid.std().item() == pytest.approx(0.5, rel=0.1)
    assert torch.equal((a - plain)[:, ~removed], torch.zeros_like((a - plain)[:, ~removed]))


def test_imputation_matches_quantus(quantus):
    from quantus.functions.perturb_func import noisy_linear_imputation as q_nli

    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 12, 15, generator=g, dtype=torch.float64)
    removed = torch.rand(12, 15, generator=g) < 0.6
    ours = noisy_linear_imputation(x, removed, noise=0.0)
    theirs = q_nli(x.numpy(), indices=np.flatnonzero(removed.numpy()), noise=0.0)
    assert np.allclose(ours.numpy(), theirs, atol=1e-10)


def test_road_matches_quantus(quantus):
    # Quantus's ROAD flattens the map broadcast to the input, so it needs one input channel; it
    # reports MoRF accuracy (prediction still the label) per percentage, averaged over images. Noise
    # is set to 0 on both sides so the comparison is exact (Quantus draws from np.random).
    model = LinearClassifier((1, 14, 14), classes=5).eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(12, 1, 14, 14, generator=g)
    maps = torch.rand(12, 14, 14, generator=g)
    pct = [10, 30, 50, 70, 90]
    ours = road(model, x, maps, percentages=pct, noise=0.0, order="morf")
    y = model(x).argmax(1).numpy()
    metric = quantus.ROAD(percentages=pct, noise=0.0, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps[:, None].numpy(),
                    device="cpu", channel_first=True)
    assert list(theirs) == pct
    assert np.allclose(ours.curve("morf").numpy(), [theirs[p] for p in pct])
    assert ours.curve("morf")[-1] < 1.0  # imputation does change predictions here


def test_road_orders_and_scores():
    # A model that only looks at the left half: deleting the left half first (MoRF for a map that
    # says "left") hurts, deleting the right half first (LeRF) does not change the score at all.
    w = torch.zeros(1, 8, 8)
    w[:, :, :4] = 1.0
    model = LinearScore(w)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(3, 1, 8, 8, generator=g) + 1.0
    maps = torch.zeros(3, 8, 8)
    maps[:, :, :4] = 1.0 + torch.rand(3, 8, 4, generator=g)
    r = road(model, x, maps, target=0, percentages=[25, 50], softmax=False, noise=0.0)
    clean = (x * w).flatten(1).sum(1)
    assert torch.allclose(r.lerf_scores, clean[:, None].expand(3, 2), atol=1e-5)
    assert (r.morf_scores[:, 0] != clean).all()
    d = r.to_dict("morf")
    assert d["x"] == [25.0, 50.0] and d["measure"] == "accuracy" and len(d["curves"]) == 3
    # Seeded noise: the same seed gives the same scores, another seed different ones.
    r1 = road(model, x, maps, target=0, percentages=[50], softmax=False, order="morf", seed=1)
    r2 = road(model, x, maps, target=0, percentages=[50], softmax=False, order="morf", seed=1)
    r3 = road(model, x, maps, target=0, percentages=[50], softmax=False, order="morf", seed=2)
    assert torch.equal(r1.morf_scores, r2.morf_scores) and not torch.equal(r1.morf_scores, r3.morf_scores)
    with pytest.raises(ValueError, match="order"):
        road(model, x, maps, order="best")


def test_road_callable_target_has_no_accuracy():
    model = LinearScore(torch.ones(1, 6, 6))
    x = torch.rand(2, 1, 6, 6)
    r = road(model, x, torch.rand(2, 6, 6), target=lambda out: out[:, 0] * 2, percentages=[50], noise=0.0)
    assert r.morf_correct is None and r.to_dict("morf")["measure"] == "score"
    with pytest.raises(ValueError, match="callable"):
        r.curve("morf", "correct")
