"""DeepLIFT (rescale rule) and DeepLiftShap: Captum parity where Captum is right, hand-computed cases where it is
not, summation-to-delta, batching and the model-state contract."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import DeepLift, DeepLiftShap
from captum.attr._core import deep_lift as captum_deep_lift
from torch import nn

from interpretorch.attribution import explain
from interpretorch.attribution.deeplift import deeplift, deeplift_shap
from interpretorch.models import TinyCNN

TARGETS = ["top1", 3, [1, 4, 7]]


def assert_agree(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """max |ours - ref| <= tol x max |ref| (and the same shape)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0, "the reference map is all zeros: the comparison would prove nothing"
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


class Times1(nn.Module):
    """x * 1: changes nothing, but keeps two of Captum's hooked modules from sharing a tensor."""

    def forward(self, x):
        return x * 1.0


def separated(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ReLU followed by ``Times1``: the same function, on which Captum's DeepLift
    hooks do not collide (they do when a ReLU feeds a MaxPool directly, see the hand-computed test)."""
    m = copy.deepcopy(model)
    for name, mod in list(m.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(mod, child_name, nn.Sequential(nn.ReLU(), Times1()))
    return m


def captum(cls, model, x, base, target, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model).attribute(x, base, target=target, **kw)


@pytest.fixture
def tiny64():
    g = torch.Generator().manual_seed(0)
    return TinyCNN().double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g)


def _captum_target(model, x, target):
    return model(x).argmax(1) if target == "top1" else target


@pytest.mark.numerics
@pytest.mark.parametrize("target", TARGETS)
def test_deeplift_matches_captum_on_tinycnn(tiny64, target, snapshot):
    model, x = tiny64
    base = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.3
    snap = snapshot(model)
    ours = deeplift(model, x, target, baseline=base, batch_size=3)  # one pair per call
    snap.assert_unchanged()
    ref = captum(DeepLift, separated(model), x, base, _captum_target(model, x, target))
    assert_agree(ours.maps, ref)
    assert ours.extras["rescaled_operations"] == 5  # 3 ReLU + 2 MaxPool
    assert ours.extras["delta"].abs().max() < 1e-10  # sums to f(x) - f(x')
    torch.testing.assert_close(ours.scores, model(x).gather(1, ours.target[:, None]).squeeze(1).detach())
    big = deeplift(model, x, target, baseline=base, batch_size=64)
    torch.testing.assert_close(big.maps, ours.maps)


def test_captum_deeplift_ignores_the_maxpool_rule_after_a_relu():
    """ReLU -> MaxPool over two pixels, x = (2, -1), reference (0, 1). Hand computation: ReLU gives (2, 0) and
    (0, 1); the max goes from 1 to 2, and the rule hands that difference of 1 to the image's maximum (pixel 0),
    whose ReLU input moved by 2: multiplier 1/2 there, 0 at pixel 1, attributions (2 x 1/2, 0) = (1, 0), which
    sum to f(x) - f(x') = 1. Captum's ReLU hook reads the gradient before its MaxPool hook rewrote it (both
    hooks sit on the same tensor) and returns (2, 0), summing to 2; with any operation between them it is right."""
    model = nn.Sequential(nn.ReLU(), nn.MaxPool2d((1, 2)), nn.Flatten()).double()
    x = torch.tensor([[[[2.0, -1.0]]]], dtype=torch.float64)
    r = torch.tensor([[[[0.0, 1.0]]]], dtype=torch.float64)
    expected = torch.tensor([[[[1.0, 0.0]]]], dtype=torch.float64)
    e = deeplift(model, x, 0, baseline=r)
    torch.testing.assert_close(e.maps, expected)
    assert abs(float(e.extras["delta"][0])) < 1e-12
    torch.testing.assert_close(captum(DeepLift, model, x, r, 0).detach(), torch.tensor([[[[2.0, 0.0]]]],
                                                                                       dtype=torch.float64))
    torch.testing.assert_close(captum(DeepLift, separated(model), x, r, 0).detach(), expected)


def test_captum_deeplift_treats_relu6_as_linear():
    """y = w2 * relu6(w1 x) with x = 4, reference 0, w1 = 2, w2 = 1: relu6 goes from 0 to 6 while its input goes
    from 0 to 8, multiplier 6/8, attribution 4 x 2 x 6/8 = 6 = f(x) - f(x'). Captum has no rule for nn.ReLU6 and
    uses its derivative at x (0: the unit is saturated), attributing 0."""
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.ReLU6(), nn.Linear(1, 1, bias=False)).double()
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[2].weight.fill_(1.0)
    x, r = torch.tensor([[4.0]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)

    class Flat(nn.Module):  # our inputs are images: (1, 1, 1, 1) -> (1, 1)
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, t):
            return self.net(t.flatten(1))

    e = deeplift(Flat(), x.view(1, 1, 1, 1), 0, baseline=0.0)
    assert float(e.maps.sum()) == pytest.approx(6.0)
    assert float(captum(DeepLift, model, x, r, 0).detach().sum()) == 0.0


@pytest.mark.numerics
def test_deeplift_matches_captum_on_efficientnet_lite0_when_captum_knows_relu6(pretrained, monkeypatch):
    model = pretrained.model  # float32, one image at 48 px
    x = pretrained.preprocess([__import__("skimage").data.chelsea()])
    x = F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
    ours = deeplift(model, x, "top1", batch_size=2)
    assert ours.extras["rescaled_operations"] == 33  # every ReLU6 of Lite0
    change = ours.scores - ours.extras["reference_scores"]
    assert (ours.extras["delta"] / change).abs().max() < 1e-4  # float32 rounding only
    plain = captum(DeepLift, model, x, torch.zeros_like(x), ours.target, return_convergence_delta=True)[1]
    assert plain.abs().max() > 0.01  # Captum alone: ReLU6 keeps its gradient, summation fails
    monkeypatch.setitem(captum_deep_lift.SUPPORTED_NON_LINEAR, nn.ReLU6, captum_deep_lift.nonlinear)
    assert_agree(ours.maps, captum(DeepLift, model, x, torch.zeros_like(x), ours.target))


@pytest.mark.numerics
def test_deeplift_shap_matches_captum_on_efficientnet_lite0_when_captum_knows_relu6(pretrained, monkeypatch):
    model = pretrained.model  # float32, one image at 32 px, three references
    x = F.interpolate(pretrained.preprocess([__import__("skimage").data.chelsea()]), size=(32, 32),
                      mode="bilinear", align_corners=False)
    dist = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 0.5
    ours = deeplift_shap(model, x, "top1", baselines=dist, batch_size=2)
    monkeypatch.setitem(captum_deep_lift.SUPPORTED_NON_LINEAR, nn.ReLU6, captum_deep_lift.nonlinear)
    assert_agree(ours.maps, captum(DeepLiftShap, model, x, dist, ours.target))


@pytest.mark.numerics
def test_deeplift_shap_matches_captum(tiny64):
    model, x = tiny64
    dist = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.5
    ours = deeplift_shap(model, x, [1, 4, 7], baselines=dist, batch_size=5)
    ref = captum(DeepLiftShap, separated(model), x, dist, [1, 4, 7])
    assert_agree(ours.maps, ref)
    assert ours.extras["delta"].abs().max() < 1e-10
    # the mean of DeepLIFT over the references, each pair independent of the others
    mean = sum(deeplift(model, x, [1, 4, 7], baseline=d).maps for d in dist) / 4
    torch.testing.assert_close(ours.maps, mean)


def test_deeplift_reaches_functional_and_in_place_activations():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, t):
            h = F.elu(self.c1(t))
            h = torch.sigmoid(h).clone()
            h = F.max_pool2d(h.tanh() * 2, 2)
            h = F.gelu(self.c2(h)).relu_()
            return self.fc(F.silu(h).mean((2, 3)))

    torch.manual_seed(0)
    net = Net().double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    e = deeplift(net, x, [0, 2], baseline=0.1, batch_size=2)
    assert e.extras["rescaled_operations"] == 7 and e.extras["unpaired_operations"] == 0
    assert e.extras["delta"].abs().max() < 1e-10
    assert not torch.allclose(e.maps, explain(net, x, "gradient_x_input", target=[0, 2]).maps)


def test_deeplift_shap_default_references_and_registry(tiny64):
    model, x = tiny64
    e = explain(model, x, "deepshap", target=2, batch_size=4)
    assert e.method == "deeplift_shap" and e.extras["n_baselines"] == 2 and e.maps.shape == x.shape
    assert e.extras["delta"].abs().max() < 1e-10


def test_deeplift_bad_inputs(tiny64):
    model, x = tiny64
    with pytest.raises(ValueError, match="eps must be > 0"):
        deeplift(model, x, eps=0.0)
    with pytest.raises(ValueError, match=r"baselines must have shape \(K, 3, 16, 16\)"):
        deeplift_shap(model, x, baselines=torch.zeros(2, 3, 8, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="baselines must be a tensor"):
        deeplift_shap(model, x, baselines=0.0)


@pytest.mark.numerics
def test_deeplift_matches_captum_where_image_and_reference_agree(tiny64):
    # Half of each image equals its reference, so many units see no difference at all: there the multiplier
    # is the derivative (closed form for ReLU, Captum's gradient), and the maps still agree.
    model, x = tiny64
    base = x.clone()
    base[..., :8] = 0.0
    ours = deeplift(model, x, 2, baseline=base, batch_size=2)
    ref = captum(DeepLift, separated(model), x, base, 2)
    assert_agree(ours.maps, ref)
    assert ours.extras["delta"].abs().max() < 1e-10
    assert (ours.maps[..., 8:] == 0).all()


@pytest.mark.numerics
def test_deeplift_shap_with_more_references_than_share_a_forward_pass(tiny64):
    # 6 shared references: one image forward serves 4 of them, a second one the other 2; each reference's map is
    # its own DeepLIFT map, whatever the chunking
    model, x = tiny64
    dist = torch.randn(6, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.5
    for bs in (1, 2, 64):
        ours = deeplift_shap(model, x, "top1", baselines=dist, batch_size=bs)
        mean = sum(deeplift(model, x, ours.target, baseline=d).maps for d in dist) / 6
        torch.testing.assert_close(ours.maps, mean)
        assert ours.extras["delta"].abs().max() < 1e-10
        assert ours.extras["rescaled_operations"] == 5
        torch.testing.assert_close(ours.scores, model(x).gather(1, ours.target[:, None]).squeeze(1).detach())
    ref = captum(DeepLiftShap, separated(model), x, dist, ours.target)
    assert_agree(ours.maps, ref)
