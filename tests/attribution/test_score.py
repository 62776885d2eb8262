"""Score-CAM and Ablation-CAM against direct, unbatched, un-deduplicated computations."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.score import ablation_cam, score_cam
from interpretorch.models import TinyCNN


def _acts(model, x, upto):
    with torch.no_grad():
        return model.features[:upto](x)


def _direct_scorecam(model, x, layer_upto, target, weighting, align_corners=False):
    """One masked forward per (image, channel), exactly as the paper describes it."""
    a = _acts(model, x, layer_upto)
    out = torch.zeros(x.shape[0], *a.shape[2:])
    for b in range(x.shape[0]):
        weights = []
        for c in range(a.shape[1]):
            up = F.interpolate(a[b:b + 1, c:c + 1], size=x.shape[-2:], mode="bilinear",
                               align_corners=align_corners)[0, 0]
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
            with torch.no_grad():
                logits = model(x[b:b + 1] * mask)[0]
            weights.append(logits.softmax(0)[target[b]] if weighting == "softmax" else logits[target[b]])
        w = torch.stack(weights)
        if weighting == "channel_softmax":
            w = w.softmax(0)
        out[b] = F.relu((w[:, None, None] * a[b]).sum(0))
    return out


@pytest.mark.parametrize("weighting", ["softmax", "logit", "channel_softmax"])
def test_scorecam_equals_direct_computation(tiny, images, weighting):
    target = [0, 1, 2, 3]
    e = score_cam(tiny, images, target, "features.10", batch_size=7, weighting=weighting, align_corners=False)
    ref = _direct_scorecam(tiny, images, 11, target, weighting)
    assert torch.allclose(e.raw, ref, atol=1e-5 * float(ref.abs().max()) + 1e-7)


def test_scorecam_align_corners_option(tiny, images):
    e = score_cam(tiny, images, [0, 1, 2, 3], "features", weighting="channel_softmax", align_corners=True)
    ref = _direct_scorecam(tiny, images, 11, [0, 1, 2, 3], "channel_softmax", align_corners=True)
    assert torch.allclose(e.raw, ref, atol=1e-5 * float(ref.abs().max()))


def test_scorecam_dedupes_constant_channels(images):
    model = TinyCNN(num_classes=5).eval()
    with torch.no_grad():
        model.features[9].bias[:10] = -100.0  # ten channels are dead after the ReLU: constant maps
    calls = {"rows": 0}
    h = model.register_forward_hook(lambda m, i, o: calls.__setitem__("rows", calls["rows"] + i[0].shape[0]))
    try:
        e = score_cam(model, images, 1, "features.10", batch_size=16)
    finally:
        h.remove()
    a = _acts(model, images, 11).flatten(2)
    varying = int((a.amax(-1) > a.amin(-1)).sum())
    assert varying <= 4 * 22
    # 4 clean rows + 1 all-zero input shared by every constant channel + one row per varying (image, channel).
    assert calls["rows"] == 4 + 1 + varying
    ref = _direct_scorecam(model, images, 11, [1, 1, 1, 1], "softmax")
    assert torch.allclose(e.raw, ref, atol=1e-5 * float(ref.abs().max()))


def _direct_ablation(model, x, layer_upto, target):
    a = _acts(model, x, layer_upto)
    out = torch.zeros(x.shape[0], *a.shape[2:])
    for b in range(x.shape[0]):
        with torch.no_grad():
            clean = model(x[b:b + 1])[0, target[b]]
            weights = []
            for c in range(a.shape[1]):
                ab = a[b:b + 1].clone()
                ab[:, c] = 0
                rest = model.features[layer_upto:](ab)
                y = model.fc(model.pool(rest).flatten(1))[0, target[b]]
                weights.append((clean - y) / clean)
        w = torch.stack(weights)
        out[b] = F.relu((w[:, None, None] * a[b]).sum(0))
    return out


def test_ablationcam_equals_direct_computation(tiny, images):
    target = [4, 3, 2, 1]
    e = ablation_cam(tiny, images, target, "features.8", batch_size=10)
    ref = _direct_ablation(tiny, images, 9, target)
    assert torch.allclose(e.raw, ref, atol=1e-4 * float(ref.abs().max()))


class NotSequential(nn.Module):
    """Same computation as a TinyCNN but with a forward that cannot be split into stages."""

    def __init__(self, inner: TinyCNN) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner.fc(self.inner.pool(self.inner.features(x)).flatten(1))


def test_ablation_tail_and_full_rerun_agree(tiny, images):
    from interpretorch.models.layers import tail_after

    wrapped = NotSequential(tiny)
    assert tail_after(tiny, "features.8") is not None
    assert tail_after(wrapped, "inner.features.8") is None
    fast = ablation_cam(tiny, images, 2, "features.8")
    slow = ablation_cam(wrapped, images, 2, "inner.features.8")
    assert torch.allclose(fast.raw, slow.raw, atol=1e-5 * float(fast.raw.abs().max()))


@pytest.mark.numerics
def test_score_methods_batch_equals_single(tiny, images):
    for fn in (score_cam, ablation_cam):
        batch = fn(tiny, images, [0, 1, 2, 3], "features", batch_size=5)
        for i in range(4):
            one = fn(tiny, images[i:i + 1], [i], "features")
            assert torch.allclose(batch.maps[i], one.maps[0], atol=1e-5), fn.__name__


def test_unknown_weighting_is_rejected(tiny, images):
    with pytest.raises(ValueError, match="weighting"):
        score_cam(tiny, images, 0, "features", weighting="probability")
