"""GAN Dissection tallies: hand-made units, a naive re-computation, streaming invariance, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gan_toys import RandomGenerator, RandomSegmenter, nan_generator, toy_generator, toy_segmenter
from interpretorch.capture import capture
from interpretorch.gan import dissect_generator, sample_z
from interpretorch.gan.dissect import default_layers


def test_units_built_on_a_concept_get_hand_counted_iou(snapshot):
    g, s = toy_generator(), toy_segmenter()
    snap_g, snap_s = snapshot(g), snapshot(s)
    d = dissect_generator(g, s, "feat", s.class_names, z_shape=(3,), samples=20, quantile=0.5, batch_size=6)
    iou = d.layers["feat"].iou  # columns: 0 unlabelled, 1 "B", 2 "A"
    # unit 0 draws A exactly: its region (top half of its values, i.e. where it is > 0) is A's pixels
    assert iou[0, 2] == 1.0 and iou[0, 1] == 0.0
    # unit 1 fires on the top half: top half & A = 16 of 8x8 pixels, union 48, per image -> 1/3
    assert iou[1, 2] == pytest.approx(1 / 3, abs=1e-12) and iou[1, 1] == pytest.approx(1 / 3, abs=1e-12)
    assert d.top_units("feat", "A", 1) == [0]
    assert d.layers["feat"].detectors()[0] == {"unit": 0, "label": "A", "category": "concept", "iou": 1.0}
    assert d.concept_pixels.tolist() == [20 * 32, 20 * 32]
    snap_g.assert_unchanged()
    snap_s.assert_unchanged()


def _naive_iou(g, s, layer, samples, q):
    """Straight from the definition: all activations in memory, thresholds by sorting, IoU over all samples."""
    z = sample_z(samples, (8,), 0)
    with capture(g, [layer], grad=False) as rec:
        img = g(z)
        act = rec[layer]
    seg = s(img).argmax(1).numpy()
    a = act.numpy()
    u = a.shape[1]
    vals = np.sort(a.transpose(1, 0, 2, 3).reshape(u, -1), axis=1)[:, ::-1]
    n = vals.shape[1]
    t = vals[:, int(np.floor(q * n))]  # the (floor(q n) + 1)-th largest
    up = F.interpolate(act, size=img.shape[-2:], mode="bilinear", align_corners=False).numpy()
    out = np.zeros((u, 4))
    for unit in range(u):
        region = up[:, unit] > t[unit]
        for c in range(4):
            truth = seg == c
            union = (region | truth).sum()
            out[unit, c] = (region & truth).sum() / union if union else 0.0
    return torch.from_numpy(t.copy()), torch.from_numpy(out)


@pytest.mark.numerics
@pytest.mark.parametrize("layer", ["up1", "up1.0"])
def test_matches_a_naive_computation(layer):
    """Streaming tallies in batches of 5 equal the definition computed on all 37 samples at once. The random
    generator's layers are row-wise, so its activations are bit-equal at any batch size on every kernel and the
    thresholds (values picked from those activations) can be compared exactly."""
    g, s = RandomGenerator().eval(), RandomSegmenter().eval()
    t, iou = _naive_iou(g, s, layer, 37, 0.2)
    d = dissect_generator(g, s, layer, s.class_names, z_shape=(8,), samples=37, quantile=0.2, batch_size=5)
    ld = d.layers[layer]
    assert torch.equal(ld.thresholds, t)
    assert torch.allclose(ld.iou[:, 1:], iou, atol=1e-12)
    assert iou.max() > 0.05  # the comparison is not between zeros


@pytest.mark.numerics
def test_streaming_does_not_change_the_counts():
    """Batch size, activation cache and upsampling chunks change no count (row-wise layers: bit-equal inputs)."""
    g, s = RandomGenerator().eval(), RandomSegmenter().eval()
    ref = dissect_generator(g, s, ["up1"], s.class_names, z_shape=(8,), samples=30,
                            quantile=0.02, batch_size=30)
    # small batches, with and without the cached activations, upsampled 2 units or 1 unit at a time
    for bs, cache, most in ((4, 1 << 30, 1 << 25), (7, 0, 1 << 25), (30, 0, 2 * 16 * 16 * 30), (9, 0, 1)):
        d = dissect_generator(g, s, ["up1"], s.class_names, z_shape=(8,), samples=30, quantile=0.02,
                              batch_size=bs, cache_bytes=cache, max_upsampled=most)
        a, b = d.layers["up1"].tally, ref.layers["up1"].tally
        assert torch.equal(a.intersect, b.intersect) and torch.equal(a.activation, b.activation)
        assert torch.equal(a.truth, b.truth)
        assert torch.equal(d.layers["up1"].thresholds, ref.layers["up1"].thresholds)


def test_latent_stream_prefix_is_stable():
    assert torch.equal(sample_z(5, (4,), 3), sample_z(2000, (4,), 3)[:5])
    assert sample_z(3, (2, 1, 1), 0).shape == (3, 2, 1, 1)


def test_default_layer_is_a_middle_feature_map():
    assert default_layers(RandomGenerator().eval(), (8,)) == ["up1"]


def test_bad_input_is_named():
    g, s = toy_generator(), toy_segmenter()
    with pytest.raises((KeyError, ValueError, AttributeError), match="nope"):
        dissect_generator(g, s, "nope", s.class_names, z_shape=(3,), samples=4)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) logits"):
        dissect_generator(g, s, "feat", ["a", "b", "c"], z_shape=(3,), samples=4)
    with pytest.raises(ValueError, match="NaN"):
        dissect_generator(nan_generator(), s, "feat", s.class_names, z_shape=(3,), samples=4)
    with pytest.raises(ValueError, match="quantile"):
        dissect_generator(g, s, "feat", s.class_names, z_shape=(3,), samples=4, quantile=1.5)
    with pytest.raises(ValueError, match="samples"):
        dissect_generator(g, s, "feat", s.class_names, z_shape=(3,), samples=0)
    with pytest.raises(ValueError, match="unknown concept"):
        dissect_generator(g, s, "feat", s.class_names, z_shape=(3,), samples=4).top_units("feat", "C", 1)
