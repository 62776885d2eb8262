"""LRP against Zennit 0.5.1 (installed with ``pip install --no-deps zennit==0.5.1``; it imports torchvision, so it
runs in this second environment): every composite and every rule, on TinyCNN and EfficientNet-Lite0.

Zennit's BatchNorm canonizer folds BatchNorm into the layer before it but leaves the BatchNorm's ``eps`` in place,
so the canonized model computes x / sqrt(1 + eps) where the original computed x (checked below); our canonizer
replaces the BatchNorm by an identity. The comparisons therefore use copies of the models whose BatchNorms have
``eps`` folded into ``running_var`` (eps = 0: the same function), on which both canonizers are exact.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zennit import rules as zr
from zennit import types as zt
from zennit.attribution import Gradient
from zennit.canonizers import NamedMergeBatchNorm, SequentialMergeBatchNorm
from zennit.composites import (EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, ExcitationBackprop,
                               LayerMapComposite, SpecialFirstLayerMapComposite, layer_map_base)

from interpretorch.attribution.lrp import lrp, merge_batchnorm
from interpretorch.models import TinyCNN, load_model


def eps_folded(model: nn.Module) -> nn.Module:
    """A copy computing the same function with every BatchNorm's eps moved into its running variance."""
    model = copy.deepcopy(model)
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_var.add_(bn.eps)
            bn.eps = 0.0
    return model


def zennit_relevance(model, x, composite, target):
    """Zennit's input relevance when the target logit is the output relevance (as ours)."""
    model = copy.deepcopy(model)
    out = model(x)
    start = torch.zeros_like(out)
    start[range(len(x)), target] = 1
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x, start * out.detach())
    return rel


def assert_agree(ours, ref, tol=1e-5):
    scale = ref.abs().max()
    assert scale > 0
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


@pytest.fixture(scope="module")
def tiny():
    model = eps_folded(TinyCNN().double().eval())
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False  # Zennit's hooks need the activation's input intact
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return model, x, model(x).argmax(1)


COMPOSITES = {"epsilon_plus": EpsilonPlus, "epsilon_alpha2_beta1": EpsilonAlpha2Beta1,
              "excitation_backprop": ExcitationBackprop}


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_alpha2_beta1", "excitation_backprop", "epsilon_gamma_box"])
def test_composites_match_zennit_on_tinycnn(tiny, name):
    model, x, t = tiny
    if name == "epsilon_gamma_box":
        comp = EpsilonGammaBox(low=x.amin((2, 3), keepdim=True), high=x.amax((2, 3), keepdim=True),
                               canonizers=[SequentialMergeBatchNorm()])
    else:
        comp = COMPOSITES[name](canonizers=[SequentialMergeBatchNorm()])
    assert_agree(lrp(model, x, composite=name, batch_size=2).maps, zennit_relevance(model, x, comp, t), tol=1e-10)


@pytest.mark.numerics
@pytest.mark.parametrize("name, rule", [("epsilon", zr.Epsilon(epsilon=0.01)), ("gamma", zr.Gamma()),
                                        ("zplus", zr.ZPlus()), ("alpha_beta", zr.AlphaBeta())])
def test_rules_match_zennit_on_tinycnn(tiny, name, rule):
    model, x, t = tiny
    comp = LayerMapComposite(layer_map_base() + [(zt.Linear, rule)], canonizers=[SequentialMergeBatchNorm()])
    ours = lrp(model, x, composite=None, rule=name, epsilon=0.01)
    assert_agree(ours.maps, zennit_relevance(model, x, comp, t), tol=1e-10)


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["flat", "wsquare", "zbox"])
def test_first_layer_rules_match_zennit_on_tinycnn(tiny, name):
    model, x, t = tiny
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    first = {"flat": zr.Flat(), "wsquare": zr.WSquare(), "zbox": zr.ZBox(low=low, high=high)}[name]
    comp = SpecialFirstLayerMapComposite(layer_map_base() + [(zt.Linear, zr.Epsilon())],
                                         first_map=[(zt.Linear, first)], canonizers=[SequentialMergeBatchNorm()])
    ours = lrp(model, x, composite=None, rule="epsilon", first_rule=name)
    assert_agree(ours.maps, zennit_relevance(model, x, comp, t), tol=1e-10)


@pytest.mark.numerics
def test_composites_match_zennit_on_efficientnet_lite0():
    from skimage import data

    loaded = load_model("efficientnet_lite0")
    model = eps_folded(loaded.model)
    x = F.interpolate(loaded.preprocess([data.chelsea()]), size=(64, 64), mode="bilinear", align_corners=False)
    t = model(x).argmax(1)
    pairs = merge_batchnorm(copy.deepcopy(model), x)
    assert len(pairs) == 49  # every BatchNorm of Lite0 follows a convolution
    named = [([a], b) for a, b in pairs]
    low, high = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    for name in ("epsilon_plus", "epsilon_alpha2_beta1", "excitation_backprop", "epsilon_gamma_box"):
        if name == "epsilon_gamma_box":
            comp = EpsilonGammaBox(low=low, high=high, canonizers=[NamedMergeBatchNorm(named)])
        else:
            comp = COMPOSITES[name](canonizers=[NamedMergeBatchNorm(named)])
        assert_agree(lrp(model, x, composite=name).maps, zennit_relevance(model, x, comp, t))


def test_zennit_canonizer_leaves_batchnorm_eps():
    """Linear(1, 1) with weight 1 then BatchNorm (mean 0, var 1, weight 1, bias 0, eps 0.21): y = x / sqrt(1.21)
    = x / 1.1. Merged, the layer computes x / 1.1 and the BatchNorm should be the identity; Zennit's leaves it
    dividing by sqrt(1 + 0.21) again, so the canonized model gives x / 1.21. Ours keeps x / 1.1."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1, eps=0.21)).double().eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    x = torch.tensor([[2.2]], dtype=torch.float64)
    with torch.no_grad():
        assert float(model(x)) == pytest.approx(2.0)
        with LayerMapComposite([], canonizers=[SequentialMergeBatchNorm()]).context(copy.deepcopy(model)) as zc:
            assert float(zc(x)) == pytest.approx(2.2 / 1.21)
        ours = copy.deepcopy(model)
        merge_batchnorm(ours, x)
        assert float(ours(x)) == pytest.approx(2.0)
