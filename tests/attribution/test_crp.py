"""CRP: conditional relevances add up to plain LRP, a hand-computed case, directions, the attribution graph and
relevance-maximisation reference images (resumable). Parity with Zennit: tests_vision/test_crp_zennit.py."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.attribution.crp import (attribution_graph, channel_relevance, conditional_relevance,
                                           reference_images)
from interpretorch.attribution.lrp import lrp
from interpretorch.models import TinyCNN


def bias_free_cnn() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 5, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(5, 4, bias=False)).double().eval()
    with torch.no_grad():
        model[-1].weight.mul_(100)
    return model


@pytest.fixture
def images():
    return 10 * torch.rand(3, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.numerics
@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_alpha2_beta1", "epsilon_gamma_box"])
@pytest.mark.parametrize("layer", ["1", "4"])
def test_conditional_relevances_of_all_channels_sum_to_lrp(images, composite, layer, snapshot):
    model = bias_free_cnn()
    snap = snapshot(model)
    channels = 6 if layer == "1" else 5
    crp = conditional_relevance(model, images, [0, 2, 3], layer, list(range(channels)), composite=composite,
                                batch_size=4)
    snap.assert_unchanged()
    plain = lrp(model, images, [0, 2, 3], composite=composite).maps
    total = crp.relevance.sum(1)
    assert (total - plain).abs().max() <= 1e-5 * plain.abs().max()
    # the conditioned layer's relevance splits the class logit among the channels (bias-free: conserved)
    logits = model(images).gather(1, torch.tensor([[0], [2], [3]])).squeeze(1).detach()
    torch.testing.assert_close(crp.concept_relevance.sum(1), logits, rtol=1e-5, atol=0)
    torch.testing.assert_close(crp.channel_relevance, crp.concept_relevance, rtol=1e-9, atol=1e-12)
    # all channels as one set is plain LRP too, and so is an orthonormal basis of directions
    one_set = conditional_relevance(model, images, [0, 2, 3], layer, [list(range(channels))],
                                    composite=composite).relevance[:, 0]
    assert (one_set - plain).abs().max() <= 1e-5 * plain.abs().max()
    q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(3)))
    basis = conditional_relevance(model, images, [0, 2, 3], layer, list(q.T), composite=composite)
    assert (basis.relevance.sum(1) - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_one_channel_by_hand():
    """x (2 pixels) -> 1x1 conv with weights W (3 channels) -> ReLU -> mean over pixels -> linear v.

    The logit is sum_c v_c mean_p relu(W x_p)_c. With the epsilon rule (epsilon 0, no biases) the relevance of
    channel c at pixel p is v_c a_cp / 2, and conditioning on c sends only that to the input: pixel p's input i
    gets W_ci x_ip / (W_c . x_p) * v_c a_cp / 2."""
    conv = nn.Conv2d(2, 3, 1, bias=False).double()
    lin = nn.Linear(3, 1, bias=False).double()
    W = torch.tensor([[1.0, 2.0], [0.5, -1.0], [-0.3, 0.8]], dtype=torch.float64)
    v = torch.tensor([[2.0, -1.0, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(W[:, :, None, None])
        lin.weight.copy_(v)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin).eval()
    x = torch.tensor([[1.0, 3.0], [2.0, 0.5]], dtype=torch.float64)  # x[i, p]: input channel i at pixel p
    img = x.view(1, 2, 1, 2)
    z = W @ x  # (3, 2): channel c at pixel p
    a = z.clamp(min=0)
    for c in range(3):
        crp = conditional_relevance(model, img, 0, "1", [c], composite=None, rule="epsilon", epsilon=0.0)
        r_cp = v[0, c] * a[c] / 2  # (2,)
        expected = torch.where(a[c] > 0, W[c][:, None] * x / z[c] * r_cp, torch.zeros_like(x))
        # rtol 1e-5: average pooling's rule divides by its output + 1e-6 (Zennit's stabiliser)
        torch.testing.assert_close(crp.relevance[0, 0].reshape(2, 2), expected, rtol=1e-5, atol=0)
        torch.testing.assert_close(crp.concept_relevance[0, 0], r_cp.sum(), rtol=1e-5, atol=0)


def test_direction_condition_is_the_projection():
    """A unit channel vector as a direction equals that channel's condition; a scaled direction is the same."""
    model = bias_free_cnn()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    e2 = torch.zeros(5, dtype=torch.float64)
    e2[2] = 3.0
    r = conditional_relevance(model, x, 1, "4", [2, e2, -e2])
    torch.testing.assert_close(r.relevance[:, 1], r.relevance[:, 0])
    torch.testing.assert_close(r.relevance[:, 2], r.relevance[:, 0])


def test_bad_conditions_are_refused():
    model = bias_free_cnn()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="channel 9 is outside"):
        conditional_relevance(model, x, 0, "4", [9])
    with pytest.raises(ValueError, match="needs 5 entries"):
        conditional_relevance(model, x, 0, "4", [torch.ones(3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="zero"):
        conditional_relevance(model, x, 0, "4", [torch.zeros(5, dtype=torch.float64)])
    with pytest.raises(ValueError, match="at least one"):
        conditional_relevance(model, x, 0, "4", [])


def test_batchnorm_model_and_channel_relevance(snapshot):
    """On a model with BatchNorm (canonized on a copy) the conditions still add up to LRP, and
    channel_relevance gives the same per-channel relevance in one pass."""
    model = TinyCNN(num_classes=5).double().eval()
    snap = snapshot(model)
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    layer = names[-1]
    ch = channel_relevance(model, x, "top1", [layer])[layer]
    crp = conditional_relevance(model, x, "top1", layer, list(range(ch.shape[1])), batch_size=7)
    snap.assert_unchanged()
    plain = lrp(model, x, "top1").maps
    assert (crp.relevance.sum(1) - plain).abs().max() <= 1e-5 * plain.abs().max()
    torch.testing.assert_close(crp.concept_relevance, ch, rtol=1e-7, atol=1e-9)


def test_attribution_graph_follows_the_conditioned_relevance():
    model = bias_free_cnn()
    x = 10 * torch.rand(1, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    top = int(channel_relevance(model, x, 0, ["4"])["4"][0].argmax())
    g = attribution_graph(model, x, 0, ["4", "1"], top, top=2)
    assert g.layer == "4" and g.channel == top and len(g.children) == 2
    # the children's relevance is the lower layer's relevance conditioned on the top concept
    cond = conditional_relevance(model, x, 0, "4", [top])
    assert g.relevance == pytest.approx(float(cond.concept_relevance[0, 0]), rel=1e-9)
    assert g.children[0].relevance >= g.children[1].relevance
    # with every lower channel as a child, the children carry all of the concept's relevance (bias-free)
    full = attribution_graph(model, x, 0, ["4", "1"], top, top=6)
    assert sum(c.relevance for c in full.children) == pytest.approx(full.relevance, rel=1e-5)
    edges = g.edges()
    assert [(e[0], e[2]) for e in edges] == [("4", "1"), ("4", "1")]
    with pytest.raises(ValueError, match="at least one lower layer"):
        attribution_graph(model, x, 0, ["4"], 0)


def _stream(x, batch, targets):
    for s in range(0, x.shape[0], batch):
        yield torch.arange(s, min(s + batch, x.shape[0])), x[s:s + batch], targets[s:s + batch]


def test_reference_images_by_relevance_resume(tmp_path):
    model = bias_free_cnn()
    x = 10 * torch.rand(12, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    t = torch.tensor([0, 1, 2, 3] * 3)
    whole = reference_images(model, _stream(x, 4, t), "4", n=3)
    # by hand: each image's channel relevance for its class, the top 3 per channel
    rel = channel_relevance(model, x, t, ["4"])["4"]
    expected = rel.T.argsort(dim=1, descending=True, stable=True)[:, :3]
    assert torch.equal(whole.relevance_indices, expected)
    torch.testing.assert_close(whole.relevance_values.double(), rel.T.gather(1, expected).float().double())
    assert whole.images_seen == 12
    # stopped after the first two batches, then resumed: the same result
    ck = tmp_path / "ref.pt"

    def stopping():
        for k, b in enumerate(_stream(x, 4, t)):
            if k == 2:
                raise KeyboardInterrupt
            yield b
    with pytest.raises(KeyboardInterrupt):
        reference_images(model, stopping(), "4", n=3, checkpoint=ck, checkpoint_every=1)
    resumed = reference_images(model, _stream(x, 4, t), "4", n=3, checkpoint=ck, resume=True)
    assert torch.equal(resumed.relevance_indices, whole.relevance_indices)
    assert torch.equal(resumed.activation_indices, whole.activation_indices)
    assert resumed.images_seen == 12
    with pytest.raises(ValueError, match="layer differ"):
        reference_images(model, _stream(x, 4, t), "1", n=3, checkpoint=ck, resume=True)
