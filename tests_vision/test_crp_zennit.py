"""CRP against Zennit 0.5.1 and zennit-crp 0.6.0 (both installed with ``pip install --no-deps``; Zennit imports
torchvision, so this runs in the second environment).

Zennit's way of conditioning, which zennit-crp's ``CondAttribution`` uses: with a composite's rules attached,
the gradient flowing back through a layer's output is its relevance, so a hook on that output multiplying the
gradient by a channel mask restricts the backward pass to those channels. The models have each BatchNorm's
``eps`` folded into its running variance (the same function) so that Zennit's canonizer, which keeps ``eps``,
and ours, which removes the BatchNorm, are both exact (see test_zennit_parity.py).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlus

from interpretorch.attribution.crp import channel_relevance, conditional_relevance
from interpretorch.concepts.toy import load_concept_cnn
from interpretorch.models import TinyCNN


def eps_folded(model: nn.Module) -> nn.Module:
    """A float64 copy computing the same function with every BatchNorm's eps in its running variance, ReLUs not
    in place (Zennit's hooks need the activation's input intact)."""
    model = copy.deepcopy(model).double().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.add_(m.eps)
            m.eps = 0.0
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return model


def zennit_conditional(model, x, composite, target, layer, channels):
    """Zennit's input relevance of ``target`` with the relevance at ``layer`` masked to ``channels``."""
    model = copy.deepcopy(model)
    out_layer = dict(model.named_modules())[layer]

    def mask_output(_m, _i, out):
        mask = torch.zeros(out.shape[1], dtype=out.dtype)
        mask[channels] = 1
        out.register_hook(lambda g: g * mask.view(1, -1, *([1] * (g.dim() - 2))))

    with composite.context(model) as modified:
        handle = out_layer.register_forward_hook(mask_output)
        try:
            rows = x.clone().requires_grad_(True)
            out = modified(rows)
            start = torch.zeros_like(out)
            start[range(len(x)), target] = 1
            (rel,) = torch.autograd.grad(out, rows, (start * out).detach())
        finally:
            handle.remove()
    return rel


def assert_agree(ours, ref, tol):
    scale = ref.abs().max()
    assert scale > 0
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


def _relevant(model, x, t, layer) -> list[list[int]]:
    """The two channels of most relevance for the first image, alone, and the next three together."""
    order = channel_relevance(model, x, t, [layer])[layer][0].argsort(descending=True).tolist()
    return [[order[0]], [order[1]], order[2:5]]


@pytest.fixture(scope="module")
def models():
    concept, _ = load_concept_cnn()
    g = torch.Generator().manual_seed(0)
    return {"tiny": (eps_folded(TinyCNN()), torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=g),
                     "features.6"),
            "concept": (eps_folded(concept), torch.randn(2, 3, 48, 48, dtype=torch.float64, generator=g),
                        "features.10")}


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["tiny", "concept"])
@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_alpha2_beta1"])
def test_conditional_relevance_matches_zennit(models, name, composite):
    model, x, layer = models[name]
    t = model(x).argmax(1)
    comp = {"epsilon_plus": EpsilonPlus, "epsilon_alpha2_beta1": EpsilonAlpha2Beta1}[composite]
    channels = _relevant(model, x, t, layer)
    ours = conditional_relevance(model, x, t, layer, channels, composite=composite)
    for k, chans in enumerate(channels):
        ref = zennit_conditional(model, x, comp(canonizers=[SequentialMergeBatchNorm()]), t, layer, chans)
        assert_agree(ours.relevance[:, k], ref, tol=1e-9)


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["tiny", "concept"])
def test_conditional_relevance_matches_zennit_crp(models, name):
    """Heatmaps under channel conditions, and the unconditioned relevance of every channel of the layer, against
    zennit-crp's CondAttribution. (Its recorded relevance of a layer that is also conditioned is twice ours and
    twice the class logit in sum: the partial backward it runs to that layer adds the layer's .grad twice; so the
    layer's relevance is compared without a condition.)"""
    from crp.attribution import CondAttribution

    model, x, layer = models[name]
    t = model(x).argmax(1)
    channels = _relevant(model, x, t, layer)
    ours = conditional_relevance(model, x, t, layer, channels, composite="epsilon_plus")
    attribution = CondAttribution(copy.deepcopy(model), no_param_grad=True)
    for k, chans in enumerate(channels):
        conditions = [{"y": [int(t[i])], layer: chans} for i in range(len(x))]
        res = attribution(x.clone().requires_grad_(True), conditions,
                          EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
        assert_agree(ours.heatmaps[:, k], res.heatmap, tol=1e-9)
    res = attribution(x.clone().requires_grad_(True), [{"y": [int(t[i])]} for i in range(len(x))],
                      EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]), record_layer=[layer])
    assert_agree(ours.channel_relevance, res.relevances[layer].flatten(2).sum(2), tol=1e-9)
