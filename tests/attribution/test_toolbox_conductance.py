"""Layer conductance, internal influence and the neuron-level gradient / IG / conductance: equal to Captum,
neuron conductances adding up to Integrated Gradients, batching."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (InternalInfluence, LayerConductance, NeuronConductance, NeuronGradient,
                         NeuronIntegratedGradients)

from interpretorch.attribution import explain, integrated_gradients
from interpretorch.attribution.conductance import (internal_influence, layer_conductance, neuron_conductance,
                                                   neuron_gradient, neuron_integrated_gradients)
from interpretorch.models import TinyCNN

T = [1, 2, 3]


def assert_agree(ours, ref, tol=1e-5):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


def captum(cls, model, layer, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model, layer).attribute(*args, **kw).detach()


@pytest.fixture
def tiny64():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 3, 16, 16, dtype=torch.float64, generator=g) * 0.1
    return TinyCNN().double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g), base


@pytest.mark.numerics
@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_layer_conductance_and_internal_influence_match_captum(tiny64, method, snapshot):
    model, x, base = tiny64
    layer = model.features[4]
    snap = snapshot(model)
    e = layer_conductance(model, x, T, "features.4", baseline=base, steps=10, method=method, batch_size=7)
    snap.assert_unchanged()
    ref = captum(LayerConductance, model, layer, x, base, target=T, n_steps=10, method=method)
    assert_agree(e.extras["layer_attributions"], ref)
    assert e.maps.shape == (3, 16, 16) and e.raw.shape == (3, 8, 8)
    torch.testing.assert_close(layer_conductance(model, x, T, "features.4", baseline=base, steps=10, method=method,
                                                 batch_size=64).extras["layer_attributions"],
                               e.extras["layer_attributions"])
    if method == "gausslegendre":
        ii = internal_influence(model, x, T, "features.4", baseline=base, steps=10, batch_size=4)
        assert_agree(ii.extras["layer_attributions"],
                     captum(InternalInfluence, model, layer, x, base, target=T, n_steps=10))


@pytest.mark.numerics
def test_neuron_methods_match_captum(tiny64):
    model, x, base = tiny64
    layer = model.features[4]
    channel = lambda a: a[:, 3].sum((1, 2))  # noqa: E731 - Captum's selector for our channel unit
    ng = neuron_gradient(model, x, layer="features.4", neuron=3, batch_size=2)
    assert_agree(ng.maps, captum(NeuronGradient, model, layer, x, channel))
    with torch.no_grad():
        torch.testing.assert_close(ng.scores, channel(model.features[:5](x)))  # the unit's value per image
    assert_agree(neuron_gradient(model, x, layer="features.4", neuron=(3, 2, 5), batch_size=2).maps,
                 captum(NeuronGradient, model, layer, x, (3, 2, 5)))
    assert_agree(neuron_integrated_gradients(model, x, layer="features.4", neuron=3, baseline=base, steps=10,
                                             batch_size=5).maps,
                 captum(NeuronIntegratedGradients, model, layer, x, channel, base, n_steps=10))
    assert_agree(neuron_conductance(model, x, T, "features.4", neuron=(3, 2, 5), baseline=base, steps=10,
                                    batch_size=5).maps,
                 captum(NeuronConductance, model, layer, x, (3, 2, 5), base, target=T, n_steps=10,
                        method="gausslegendre"))


@pytest.mark.numerics
def test_match_captum_on_efficientnet_lite0(pretrained, sample_batch):
    model = pretrained.model
    x = F.interpolate(sample_batch[:1], size=(32, 32), mode="bilinear", align_corners=False)
    t = int(model(x).argmax())
    layer = model._blocks[14]
    e = layer_conductance(model, x, t, "_blocks.14", steps=6, batch_size=7)
    assert_agree(e.extras["layer_attributions"],
                 captum(LayerConductance, model, layer, x, torch.zeros_like(x), target=t, n_steps=6))
    nc = neuron_conductance(model, x, t, "_blocks.14", neuron=(5, 0, 0), steps=6)
    assert_agree(nc.maps, captum(NeuronConductance, model, layer, x, (5, 0, 0), torch.zeros_like(x), target=t,
                                 n_steps=6, method="gausslegendre"))
    ii = internal_influence(model, x, t, "_blocks.14", steps=6, batch_size=4)
    assert_agree(ii.extras["layer_attributions"],
                 captum(InternalInfluence, model, layer, x, torch.zeros_like(x), target=t, n_steps=6))
    assert_agree(neuron_gradient(model, x, layer="_blocks.14", neuron=(5, 0, 0)).maps,
                 captum(NeuronGradient, model, layer, x, (5, 0, 0)))
    assert_agree(neuron_integrated_gradients(model, x, layer="_blocks.14", neuron=(5, 0, 0), steps=6).maps,
                 captum(NeuronIntegratedGradients, model, layer, x, (5, 0, 0), torch.zeros_like(x), n_steps=6))


def test_neuron_conductances_add_up_to_integrated_gradients(tiny64):
    """Every path from the input to the score goes through features.0 (8 channels), so the conductances of its
    channels add up to Integrated Gradients with the same quadrature."""
    model, x, base = tiny64
    total = sum(neuron_conductance(model, x, T, "features.0", neuron=c, baseline=base, steps=8).maps
                for c in range(8))
    torch.testing.assert_close(total, integrated_gradients(model, x, T, baseline=base, steps=8).maps)


def test_default_unit_registry_and_errors(tiny64):
    model, x, _ = tiny64
    e = explain(model, x, "neuron_ig", layer="features.4", options={"neuron_ig": {"steps": 4}})
    with torch.no_grad():
        acts = model.features[:5](x)
    assert torch.equal(e.extras["neuron"], acts.mean((2, 3)).argmax(1))  # each image's most active channel
    assert e.maps.shape == x.shape and e.target is None
    with pytest.raises(ValueError, match="is not a unit of the layer"):
        neuron_gradient(model, x, layer="features.4", neuron=(16, 0, 0))
    with pytest.raises(TypeError, match="neuron must be"):
        neuron_gradient(model, x, layer="features.4", neuron="3")
    c = explain(model, x, "conductance", target=1, layer="features.8", options={"conductance": {"steps": 4}})
    assert c.method == "layer_conductance" and c.maps.shape == (3, 16, 16)
