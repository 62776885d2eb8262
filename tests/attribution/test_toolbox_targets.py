"""Every method of the toolbox takes every target kind the registry has (top1, one class, one class per image, a
callable of the outputs) through ``core.targets`` scoring: a callable picking a class's logit gives the class's map,
and top1 gives the map of each image's predicted class."""
import pytest
import torch

from interpretorch.attribution import explain
from interpretorch.models import TinyCNN

FEATURES = {"features": "grid", "cell": 4}
OPTIONS = {
    "deeplift": {}, "deeplift_shap": {}, "gradient_shap": {"n_samples": 3}, "lrp": {},
    "shapley_sampling": {**FEATURES, "n_samples": 2}, "feature_ablation": FEATURES,
    "feature_permutation": {"cell": 4}, "lime": {**FEATURES, "n_samples": 40, "alpha": 1e-4},
    "kernel_shap": {**FEATURES, "n_samples": 12}, "layer_conductance": {"steps": 3},
    "internal_influence": {"steps": 3}, "neuron_conductance": {"steps": 3, "neuron": 2},
}
LAYER = {"layer_conductance", "internal_influence", "neuron_conductance"}


@pytest.fixture(scope="module")
def tiny():
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return TinyCNN().double().eval(), x


def run(model, x, name, target):
    return explain(model, x, name, target=target, options={name: OPTIONS[name]}, batch_size=4,
                   **({"layer": "features.4"} if name in LAYER else {}))


@pytest.mark.numerics
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_target_kind_gives_the_same_maps(tiny, name):
    model, x = tiny
    k = 3
    by_index = run(model, x, name, k)
    by_callable = run(model, x, name, lambda out: out[:, k])
    torch.testing.assert_close(by_callable.maps, by_index.maps, rtol=1e-9, atol=1e-12)
    assert float(by_index.maps.abs().max()) > 0
    top = model(x).argmax(1)
    top1 = run(model, x, name, "top1")
    per_image = run(model, x, name, top.tolist())
    torch.testing.assert_close(top1.maps, per_image.maps, rtol=1e-9, atol=1e-12)
    assert torch.equal(top1.target, top)
    other = run(model, x, name, [(int(t) + 1) % 10 for t in top])  # another class: another map
    assert not torch.allclose(other.maps, per_image.maps)
