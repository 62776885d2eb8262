"""LRP: rules checked by hand on one layer, conservation on a bias-free CNN, the epsilon rule's absorption on a
model with biases, the BatchNorm canonizer (on a copy), batching. Parity with Zennit: tests_vision/."""
import copy

import pytest
import torch
from torch import nn

from interpretorch.attribution import explain
from interpretorch.attribution.lrp import COMPOSITES, RULES, lrp, merge_batchnorm
from interpretorch.models import TinyCNN


def one_layer(w, b=None):
    """(1, n, 1, 1) images -> Linear(n, k): the rules' formulas can be written out for one layer."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None).double()
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return nn.Sequential(nn.Flatten(), lin)


def test_rules_by_hand_on_one_layer():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]], dtype=torch.float64)
    b = torch.tensor([0.4, -0.1], dtype=torch.float64)
    x = torch.tensor([2.0, 1.0, -3.0], dtype=torch.float64)
    img = x.view(1, 3, 1, 1)
    model = one_layer(w, b)
    z = w @ x + b  # (-1.1, 3.7): class 1 wins; relevance starts as its logit 3.7
    zx = w[1] * x  # contributions (0.6, 0.2, 3.0)
    e = lrp(model, img, 1, composite=None, rule="epsilon", epsilon=0.1).maps.flatten()
    torch.testing.assert_close(e, zx * z[1] / (z[1] + 0.1))
    pos = (w[1].clamp(min=0) * x.clamp(min=0) + w[1].clamp(max=0) * x.clamp(max=0))  # (0.6, 0.2, 3.0)
    zp = pos.sum() + b[1].clamp(min=0)
    torch.testing.assert_close(lrp(model, img, 1, composite=None, rule="zplus").maps.flatten(),
                               pos * z[1] / (zp + 1e-6))
    neg = w[1].clamp(max=0) * x.clamp(min=0) + w[1].clamp(min=0) * x.clamp(max=0)  # all zero here
    ab = lrp(model, img, 1, composite=None, rule="alpha_beta").maps.flatten()
    torch.testing.assert_close(ab, 2 * pos * z[1] / (zp + 1e-6) - neg)
    flat = lrp(model, img, 1, composite=None, rule="epsilon", first_rule="flat").maps.flatten()
    torch.testing.assert_close(flat, torch.full((3,), float(z[1]) / (3 + 1e-6), dtype=torch.float64))
    wsq = lrp(model, img, 1, composite=None, rule="epsilon", first_rule="wsquare").maps.flatten()
    torch.testing.assert_close(wsq, w[1] ** 2 * z[1] / ((w[1] ** 2).sum() + b[1] ** 2 + 1e-6))
    low, high = -4.0, 4.0
    zb = zx - w[1].clamp(min=0) * low - w[1].clamp(max=0) * high
    box = lrp(model, img, 1, composite=None, rule="zbox", low=low, high=high).maps.flatten()
    denom = z[1] - (w[1].clamp(min=0) * low).sum() - b[1].clamp(min=0) - (w[1].clamp(max=0) * high).sum() \
        - b[1].clamp(max=0)
    torch.testing.assert_close(box, zb * z[1] / (denom + 1e-6))


def bias_free_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5, bias=False)).double().eval()
    with torch.no_grad():
        model[-1].weight.mul_(100)  # logits far from the 1e-6 stabilisers, so they absorb nothing measurable
    return model


@pytest.mark.parametrize("how", [dict(composite=None, rule="epsilon", epsilon=1e-9), dict(composite="epsilon_plus"),
                                 dict(composite="epsilon_alpha2_beta1"), dict(composite="excitation_backprop"),
                                 dict(composite=None, rule="gamma")])
def test_conservation_on_a_bias_free_cnn(how):
    model = bias_free_cnn()
    x = 10 * torch.rand(3, 3, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    e = lrp(model, x, [0, 2, 4], **how)
    logits = model(x).gather(1, torch.tensor([[0], [2], [4]])).squeeze(1).detach()
    assert (logits.abs() > 1e-3).all()
    torch.testing.assert_close(e.extras["relevance_sum"], logits, rtol=1e-5, atol=0)
    torch.testing.assert_close(e.extras["conservation"], torch.ones(3, dtype=torch.float64), rtol=1e-5, atol=0)


def test_epsilon_absorption_on_a_model_with_biases():
    """With biases the relevance that reaches the input is not the logit, and a larger epsilon absorbs more."""
    model = TinyCNN().double().eval()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kept = {eps: lrp(model, x, composite=None, rule="epsilon", epsilon=eps).extras["conservation"]
            for eps in (1e-6, 1e-2, 1.0, 100.0)}
    assert (kept[1e-6] - 1).abs().max() > 1e-3  # biases alone take or add relevance
    means = [float(kept[e].abs().mean()) for e in (1e-6, 1e-2, 1.0, 100.0)]
    assert means == sorted(means, reverse=True) and means[-1] < 0.05 * means[0]


def test_canonizer_works_on_a_copy_and_keeps_the_function(snapshot):
    model = TinyCNN().double().eval()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    work = copy.deepcopy(model)
    pairs = merge_batchnorm(work, x)
    assert pairs == [("features.0", "features.1"), ("features.4", "features.5"), ("features.8", "features.9")]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in work.modules())
    torch.testing.assert_close(work(x), model(x))
    snap = snapshot(model)
    e = lrp(model, x, composite="epsilon_gamma_box", batch_size=1)
    snap.assert_unchanged()
    assert e.extras["merged_batchnorm"] == pairs
    torch.testing.assert_close(lrp(model, x, composite="epsilon_gamma_box", batch_size=2).maps, e.maps)
    assert not torch.allclose(lrp(model, x, canonize=False).maps, lrp(model, x).maps)


def test_bad_options_and_registry():
    model, x = bias_free_cnn(), torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown composite 'epsilon'"):
        lrp(model, x, composite="epsilon")
    with pytest.raises(ValueError, match="unknown LRP rule 'z'"):
        lrp(model, x, composite=None, rule="z")
    with pytest.raises(ValueError, match="not both"):
        lrp(model, x, rule="epsilon")
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        lrp(model, x, composite=None, rule="alpha_beta", alpha=2, beta=2)
    assert len(COMPOSITES) == 4 and {"epsilon", "gamma", "zplus", "alpha_beta", "zbox", "flat", "wsquare"} <= set(RULES)
    e = explain(model, x, "lrp", target=1, options={"lrp": {"composite": "excitation_backprop"}})
    assert e.method == "lrp" and e.maps.shape == x.shape
