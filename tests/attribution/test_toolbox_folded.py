"""The BatchNorm-folded copy that forward-only and layer methods evaluate: same function, the user's model
unchanged, remade when the model changes, never used where it would not be the same model."""
import pytest
import torch
from torch import nn

from interpretorch.attribution.conductance import internal_influence
from interpretorch.attribution.folded import folded_model
from interpretorch.attribution.shapley import feature_ablation
from interpretorch.models import TinyCNN


@pytest.fixture
def tiny():
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return TinyCNN().double().eval(), x


def test_folded_copy_computes_the_same_function_and_leaves_the_model(tiny, snapshot):
    model, x = tiny
    snap = snapshot(model)
    work = folded_model(model, x)
    snap.assert_unchanged()
    assert work is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in work.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3
    with torch.no_grad():
        torch.testing.assert_close(work(x), model(x), rtol=1e-12, atol=1e-12)
    assert folded_model(model, x) is work  # kept for the next call
    with torch.no_grad():
        model.features[1].running_mean.add_(0.5)  # the model changed: a new copy
    again = folded_model(model, x)
    assert again is not work
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=1e-12, atol=1e-12)


def test_a_captured_layer_keeps_its_batchnorm(tiny):
    model, x = tiny
    work = folded_model(model, x, keep="features.4")
    assert isinstance(work.features[5], nn.BatchNorm2d)  # the pair (features.4, features.5) is left as it was
    assert not isinstance(work.features[1], nn.BatchNorm2d) and not isinstance(work.features[9], nn.BatchNorm2d)
    e = internal_influence(model, x, 1, "features.4", steps=4)
    hook = model.features[2].register_forward_hook(lambda *a: None)  # a hook: the model itself is evaluated
    try:
        plain = internal_influence(model, x, 1, "features.4", steps=4)
    finally:
        hook.remove()
    torch.testing.assert_close(e.extras["layer_attributions"], plain.extras["layer_attributions"], rtol=1e-10,
                               atol=1e-12)


class Reused(nn.Module):
    """The convolution's output is used with and without its BatchNorm: folding would change the second use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():
            self.bn.running_mean.fill_(0.3)
            self.bn.running_var.fill_(2.0)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((self.bn(y) + y).mean((2, 3)))


def test_no_copy_where_it_would_not_be_the_same_model(tiny):
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    reused = Reused().double().eval()
    assert folded_model(reused, x) is reused
    model, x16 = tiny
    handle = model.features[2].register_forward_hook(lambda *a: None)
    try:
        assert folded_model(model, x16) is model  # a hook would no longer see the calls
    finally:
        handle.remove()
    # a global module hook (a FLOP counter, a logger) sees every module call: the copies' modules are not the
    # user's, so neither copy is made while one is registered
    from interpretorch.attribution.folded import forward_only_model
    from torch.nn.modules.module import register_module_forward_hook, register_module_full_backward_hook

    from interpretorch.attribution import occlusion

    for register in (register_module_forward_hook, register_module_full_backward_hook):
        seen = []
        handle = register(lambda mod, *a: seen.append(mod))
        try:
            assert folded_model(model, x16) is model and forward_only_model(model, x16) is model
            if register is register_module_forward_hook:  # a method's rows: only the user's modules are called
                occlusion(model, x16, window=8, stride=8)
                assert seen and set(seen) <= set(model.modules())
        finally:
            handle.remove()
    assert folded_model(model, x16) is not model and forward_only_model(model, x16) is not model
    no_bn = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2)).double()
    no_bn(x)
    assert folded_model(no_bn, x) is no_bn


def test_feature_ablation_is_the_same_with_and_without_folding(tiny):
    model, x = tiny
    folded = feature_ablation(model, x, 3, features="grid", cell=4)
    hook = model.features[2].register_forward_hook(lambda *a: None)  # a hook: the model itself is evaluated
    try:
        plain = feature_ablation(model, x, 3, features="grid", cell=4)
    finally:
        hook.remove()
    torch.testing.assert_close(folded.maps, plain.maps, rtol=1e-10, atol=1e-12)
