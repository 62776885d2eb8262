"""Similarity metrics of the sanity checks on hand cases and against scipy / scikit-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

from interpretorch.explanation import abs_grayscale, diverging
from interpretorch.sanity import similarity as S


def _maps(seed: int, shape=(3, 3, 40, 40)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_average_ranks_match_scipy_with_ties():
    x = torch.tensor([[3.0, 1.0, 3.0, 2.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 5.0, -1.0]])
    for row in range(2):
        assert np.array_equal(S.average_ranks(x)[row].numpy(), rankdata(x[row].numpy()))


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (4, 32, 32), (4, 50)])
def test_identical_maps_score_one(shape):
    a = _maps(0, shape)
    out = S.compare(a, a.clone())
    for metric in ("spearman_abs", "spearman", "topk"):
        assert torch.allclose(out[metric], torch.ones(4, dtype=torch.float64)), metric
    if len(shape) > 2:
        assert torch.allclose(out["ssim"], torch.ones(4, dtype=torch.float64))
        assert torch.allclose(out["hog"], torch.ones(4, dtype=torch.float64))
    else:  # token maps have no SSIM / HOG
        assert torch.isnan(out["ssim"]).all() and torch.isnan(out["hog"]).all()


def test_spearman_against_scipy_on_the_papers_views():
    a, b = _maps(1), _maps(2)
    b = 0.6 * a + b  # correlated
    got_abs, got_signed = S.spearman_abs(a, b), S.spearman(a, b)
    va, vb = abs_grayscale(a), abs_grayscale(b)
    da, db = diverging(a), diverging(b)
    for i in range(a.shape[0]):
        assert got_abs[i].item() == pytest.approx(spearmanr(va[i].flatten(), vb[i].flatten())[0], abs=1e-12)
        assert got_signed[i].item() == pytest.approx(spearmanr(da[i].flatten(), db[i].flatten())[0], abs=1e-12)
    assert (got_abs > 0.2).all() and (got_signed > 0.3).all()


def test_sign_matters_only_for_the_signed_metric():
    a = _maps(3)
    flipped = -a
    assert torch.allclose(S.spearman_abs(a, flipped), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(S.spearman(a, flipped), -torch.ones(3, dtype=torch.float64))
    assert torch.allclose(S.topk(a, flipped), torch.ones(3, dtype=torch.float64))


def test_rank_metrics_ignore_monotone_rescaling_and_constant_maps_are_nan():
    a = _maps(4, (2, 30, 30)).abs()
    assert torch.allclose(S.spearman_abs(a, 5 * a + 2), torch.ones(2, dtype=torch.float64))
    const = torch.zeros(2, 30, 30)
    assert torch.isnan(S.spearman_abs(a, const)).all() and torch.isnan(S.spearman(a, const)).all()


def test_ssim_against_skimage_and_an_independent_map():
    from skimage.metrics import structural_similarity

    a, b = _maps(5, (2, 48, 48)), _maps(6, (2, 48, 48))
    got = S.ssim(a, b)
    for i in range(2):
        ai, bi = a[i].double(), b[i].double()
        x = (ai - ai.min()) / (ai.max() - ai.min())
        y = (bi - bi.min()) / (bi.max() - bi.min())
        ref = structural_similarity(x.double().numpy(), y.double().numpy(), gaussian_weights=True, data_range=1.0)
        assert got[i].item() == pytest.approx(ref, abs=1e-9)
    assert got.abs().max() < 0.1  # independent noise maps are structurally unrelated


def test_hog_correlation_by_hand():
    from skimage.feature import hog

    a, b = _maps(7, (2, 64, 64)), _maps(8, (2, 64, 64))
    b = a + 0.5 * b
    got = S.hog(a, b)
    got_s = S.hog(a, b, correlation="spearman")
    for i in range(2):
        ha = hog(S.minmax(a[i:i + 1])[0].numpy(), pixels_per_cell=(16, 16))
        hb = hog(S.minmax(b[i:i + 1])[0].numpy(), pixels_per_cell=(16, 16))
        assert got[i].item() == pytest.approx(pearsonr(ha, hb)[0], abs=1e-9)
        assert got_s[i].item() == pytest.approx(spearmanr(ha, hb)[0], abs=1e-9)
    with pytest.raises(ValueError, match="unknown HOG correlation"):
        S.hog(a, b, correlation="kendall")


def test_topk_by_hand():
    a = torch.zeros(1, 1, 10, 10)
    b = torch.zeros(1, 1, 10, 10)
    a.view(-1)[:10] = torch.arange(10, 0, -1).float()  # top 5 of 100 pixels: positions 0..4
    b.view(-1)[[0, 1, 50, 60, 70]] = 1.0
    assert S.topk(a, b, fraction=0.05).item() == pytest.approx(2 / 5)
    assert S.topk(b, a, fraction=0.05).item() == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="fraction"):
        S.topk(a, b, fraction=0.0)


def test_topk_on_photo_sized_maps_equals_a_set_intersection():
    # 224 x 224 maps: the top 5 % is 2,509 pixels; the overlap is counted on (B, N) masks (a (B, k, N) one-hot
    # took 4 GB for four maps)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 224, 224, generator=g), torch.rand(4, 224, 224, generator=g)
    b[:2] = a[:2] + 0.1 * b[:2]
    got = S.topk(a, b, fraction=0.05)
    k = round(0.05 * 224 * 224)
    for i in range(4):
        sa = set(a[i].flatten().topk(k).indices.tolist())
        sb = set(b[i].flatten().topk(k).indices.tolist())
        assert got[i].item() == pytest.approx(len(sa & sb) / k, abs=1e-12)
    assert got[0] > 0.5 > got[3]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="different shapes"):
        S.compare(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match="NaN"):
        S.spearman(torch.full((1, 8, 8), float("nan")), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="unknown similarity metric"):
        S.compare(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), ["pearson"])


def test_baselines_edge_map_is_the_sobel_of_the_input():
    from skimage.filters import sobel

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    e = S.sobel_edges(images)
    for i in range(2):
        ref = sobel(images[i].double().mean(0).numpy())
        inner = (slice(1, -1), slice(1, -1))  # scikit-image masks the border
        assert np.allclose(e[i].numpy()[inner] / np.sqrt(2), ref[inner], atol=1e-12)
    # A map equal to the edge map scores 1 against the edge baseline; the random baseline is near 0.
    maps = S.edge_map_like(images, torch.zeros(2, 3, 32, 32))
    base = S.baselines(maps, images)
    assert torch.allclose(base["edge"]["spearman_abs"], torch.ones(2, dtype=torch.float64))
    assert base["random"]["spearman_abs"].abs().max() < 0.2
    assert S.edge_map_like(images, torch.zeros(2, 16, 16)).shape == (2, 16, 16)


@pytest.mark.parametrize("shape", [(3, 2, 12, 12), (3, 12, 12), (3, 30)])
@pytest.mark.parametrize("percentile", [99.0, 100.0])
def test_reference_compares_as_compare_does(shape, percentile):
    # The randomization test ranks its original maps once (Reference); every metric must still equal compare's,
    # ties (rounded maps) and a constant map (NaN rank correlations) included.
    g = torch.Generator().manual_seed(3)
    a = (torch.randn(shape, generator=g) * 4).round()
    others = [torch.randn(shape, generator=g), (torch.randn(shape, generator=g) * 3).round(), torch.zeros(shape)]
    metrics = S.METRICS if len(shape) > 2 else ("spearman_abs", "spearman", "topk")
    opts = {"spearman_abs": {"percentile": percentile}, "spearman": {"percentile": percentile}}
    ref = S.Reference(a, metrics, opts)
    for b in others:
        got, want = ref.compare(b), S.compare(a, b, metrics, opts)
        assert list(got) == list(want)
        for m in metrics:
            assert torch.allclose(got[m], want[m], atol=1e-12, equal_nan=True), m
    with pytest.raises(ValueError, match="different shapes"):
        ref.compare(torch.zeros(2, *shape[1:]))
