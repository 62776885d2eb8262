"""Meaningful and Extremal Perturbation: the region found on a toy model whose answer is known, the deletion
criterion on the sample photos, the smooth-mask parametrisation and the model contract."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch import explain
from interpretorch.attribution.masks import (SmoothMaxMask, _rank_loss, apply_pyramid, blur_pyramid,
                                             gaussian_smooth, total_variation)

H = W = 32


class RegionScore(nn.Module):
    """Class 0 scores the mean brightness of channel 0 inside a known square (``scale`` x (mean - ``offset``));
    class 1 is a constant 0."""

    def __init__(self, region: torch.Tensor, scale: float = 100.0, offset: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.scale, self.offset = scale, offset

    def forward(self, x):
        s = self.scale * ((x[:, 0] * self.region).flatten(1).sum(1) / self.region.sum() - self.offset)
        return torch.stack([s, torch.zeros_like(s)], 1)


def _toy():
    region = torch.zeros(H, W, dtype=torch.bool)
    region[6:16, 14:24] = True  # 100 px: ~10% of the image
    x = torch.zeros(2, 3, H, W)
    x[:, 0][:, region] = 1.0
    x[1, 1] = torch.rand(H, W, generator=torch.Generator().manual_seed(0))  # clutter the model ignores
    return RegionScore(region).eval(), x, region


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_extremal_perturbation_finds_the_known_region(snapshot):
    """Areas are fractions of the mask's canvas (the image plus a margin of sigma, as the paper's code); no jitter,
    since the toy model is not invariant to flips. Deleting the region's area finds the region; preserving twice
    its area covers it and keeps the clean score (the paper's criterion)."""
    model, x, region = _toy()
    snap = snapshot(model)
    before = x.clone()
    canvas = SmoothMaxMask((H, W), 2, 4.0, torch.device("cpu")).canvas
    area = float(region.sum()) / (canvas[0] * canvas[1])
    opts = {"step": 2, "sigma": 4.0, "max_blur": 6.0, "jitter": False, "iterations": 40}
    keep = explain(model, x, "extremal_perturbation", target=0,
                   options={"extremal_perturbation": {**opts, "areas": [2 * area], "variant": "preserve"}})
    drop = explain(model, x, "extremal_perturbation", target=0,
                   options={"extremal_perturbation": {**opts, "areas": [area], "variant": "delete"}})
    assert keep.extras["masks"].shape == (2, 1, H, W)
    for i in range(2):
        m = keep.extras["masks"][i, 0]
        assert m[region].mean() > 0.9 and m[~region].mean() < 0.2
        d = drop.extras["masks"][i, 0]
        assert _iou(d > 0.5, region) > 0.7 and d[~region].mean() < 0.05
    assert (keep.extras["mask_scores"][:, 0] >= 0.95 * keep.extras["clean_scores"]).all()
    assert (drop.extras["mask_scores"][:, 0] < 0.5 * drop.extras["clean_scores"]).all()
    snap.assert_unchanged()
    assert torch.equal(x, before)


@pytest.mark.numerics
def test_extremal_batching_is_independent():
    model, x, _ = _toy()
    opts = {"areas": [0.1], "iterations": 4, "step": 2, "sigma": 4.0, "max_blur": 6.0}
    a = explain(model, x, "extremal_perturbation", target=0, batch_size=1, options={"extremal_perturbation": opts})
    b = explain(model, x[1:], "extremal_perturbation", target=0, options={"extremal_perturbation": opts})
    assert torch.allclose(a.extras["masks"][1:], b.extras["masks"], atol=1e-5)


@pytest.mark.numerics
def test_extremal_in_float64_does_not_depend_on_the_batch(snapshot):
    """``dtype="float64"``: image 0 explained alone and inside a batch of 3 gives the same mask to float64 rounding
    (in float32 the optimisation turns the kernels' batch-dependent last bits into another mask: IoU 0.00-1.00
    over five random models, see the method's docstring); the user's float32 model is not converted, and maps
    come back in float32."""
    from interpretorch.attribution.registry import get_method
    from interpretorch.models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(num_classes=5).eval()
    snap = snapshot(model)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    opts = {"extremal_perturbation": {"iterations": 30, "dtype": "float64"}}
    alone = explain(model, x[:1], "extremal_perturbation", target=0, options=opts)
    batch = explain(model, x, "extremal_perturbation", target=0, options=opts)
    torch.testing.assert_close(alone.extras["masks"][0], batch.extras["masks"][0], rtol=0, atol=1e-6)
    assert (batch.extras["masks"][0] > 0.5).any() and (batch.extras["masks"][0] < 0.5).any()  # a real mask
    assert alone.maps.dtype == batch.extras["mask_scores"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    snap.assert_unchanged()
    # what `--option extremal.dtype=float64` checks before running
    get_method("extremal").check_options({"dtype": "float64"})
    with pytest.raises(ValueError, match="dtype must be a floating dtype.*'int64'"):
        explain(model, x[:1], "extremal_perturbation", options={"extremal_perturbation": {"dtype": "int64"}})


def test_smooth_max_mask_and_pyramid():
    gen = SmoothMaxMask((20, 24), step=4, sigma=6.0, device=torch.device("cpu"))
    assert gen.grid == (5, 6)
    full = gen(torch.ones(1, 1, *gen.grid))[0]
    assert full.min() > 0.95  # all parameters on: the mask is (nearly: a smooth max) one everywhere
    assert gen(torch.zeros(1, 1, *gen.grid))[1].abs().max() == 0
    p = torch.zeros(1, 1, *gen.grid)
    p[0, 0, 2, 3] = 1  # one parameter on, at pixel (8, 12): a smooth bump centred there
    m = gen(p)[0][0, 0]
    assert m[8, 12] > 0.99 and m[0, 0] < 0.01 and m[8, 12 + 6] < m[8, 12 + 2]
    x = torch.rand(2, 3, 20, 24)
    pyr = blur_pyramid(x, levels=4, max_blur=5.0)
    assert torch.equal(pyr[:, -1], x)
    assert torch.allclose(apply_pyramid(pyr, torch.ones(2, 1, 20, 24)), x)
    assert torch.allclose(apply_pyramid(pyr, torch.zeros(2, 1, 20, 24)), pyr[:, 0])
    half = apply_pyramid(pyr, torch.full((2, 1, 20, 24), 0.5))  # halfway between levels 1 and 2 of 0..3
    assert torch.allclose(half, 0.5 * (pyr[:, 1] + pyr[:, 2]), atol=1e-6)
    binary = (torch.arange(100) >= 90).float().view(1, 1, 10, 10)
    assert float(_rank_loss(binary, torch.tensor([0.1]))) == 0.0
    assert float(_rank_loss(binary, torch.tensor([0.3]))) == pytest.approx(0.2)


def test_tv_and_blur_helpers():
    m = torch.zeros(1, 1, 4, 4)
    m[..., 2:] = 1.0  # one vertical edge: 4 of the 12 horizontal differences are 1
    assert float(total_variation(m, 3.0)) == pytest.approx(4 / 12)
    x = torch.rand(1, 2, 16, 16)
    assert torch.allclose(gaussian_smooth(x, 2.0, "reflect").mean(), x.mean(), atol=0.02)
    assert torch.equal(gaussian_smooth(x, 0.0), x)


def test_meaningful_perturbation_deletes_the_toy_region(snapshot):
    _, x, region = _toy()
    model = RegionScore(region, scale=6.0, offset=0.5).eval()  # probabilities away from saturation
    snap = snapshot(model)
    e = explain(model, x, "meaningful_perturbation", target=0, options={"meaningful_perturbation": {
        "iterations": 60, "mask_size": 16, "blur_sigma": 3.0, "l1_coeff": 0.05, "tv_coeff": 0.05}})
    assert e.maps.shape == (2, H, W)
    for i in range(2):
        inside, outside = e.maps[i][region].mean(), e.maps[i][~region].mean()
        assert inside > 0.5 and outside < 0.2, (float(inside), float(outside))
    ex = e.extras
    assert (ex["deleted_scores"] < ex["clean_scores"]).all()
    assert torch.allclose(ex["mask_area"], e.maps.flatten(1).mean(1))
    assert ex["tv"].shape == (2,)
    snap.assert_unchanged()


@pytest.mark.numerics
def test_meaningful_perturbation_on_the_sample_photos(pretrained, sample_batch):
    """The deletion game on EfficientNet-Lite0: deleting the found region (photos at 96 px, 8 Adam steps, to
    keep the suite fast) leaves each photo below a quarter of its class probability."""
    import torch.nn.functional as F

    x = F.interpolate(sample_batch, size=(96, 96), mode="bilinear", align_corners=False, antialias=True)
    e = explain(pretrained.model, x, "meaningful_perturbation", options={"meaningful_perturbation": {
        "iterations": 8, "lr": 0.25, "blur_sigma": 4.0}})
    ratio = e.extras["deleted_scores"] / e.extras["clean_scores"]
    assert (ratio < 0.25).all(), ratio
    assert ((e.extras["mask_area"] > 0) & (e.extras["mask_area"] < 0.9)).all()


def test_bad_options():
    model, x, _ = _toy()
    with pytest.raises(ValueError, match="areas"):
        explain(model, x, "extremal_perturbation", options={"extremal_perturbation": {"areas": [1.5]}})
    with pytest.raises(ValueError, match="variant"):
        explain(model, x, "extremal_perturbation", options={"extremal_perturbation": {"variant": "dual"}})
    with pytest.raises(ValueError, match="iterations"):
        explain(model, x, "meaningful_perturbation", options={"meaningful_perturbation": {"iterations": 0}})
