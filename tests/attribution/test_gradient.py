"""Gradient attributions: agreement with Captum, exact results on small analytic models, the model-state contract."""
import copy

import pytest
import torch
from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
                         Saliency)
from torch import nn

from interpretorch.attribution import (deconvnet, explain, gradient, gradient_x_input, guided_backprop,
                                       guided_gradcam, integrated_gradients, layer_cams, smoothgrad, vargrad)
from interpretorch.attribution.gradient import ig_quadrature
from interpretorch.models import TinyCNN

TARGETS = ["top1", 3, [1, 4, 7]]


@pytest.fixture
def tiny64():
    """TinyCNN in float64 (in-place ReLUs, non-trivial BatchNorm, 10 classes) and a batch of 3 images."""
    g = torch.Generator().manual_seed(0)
    return TinyCNN().double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g)


def _captum_target(model, x, target):
    if target == "top1":
        return model(x).argmax(1)
    return target


@pytest.mark.parametrize("target", TARGETS)
def test_gradient_and_gradient_x_input_match_captum(tiny64, target):
    model, x = tiny64
    t = _captum_target(model, x, target)
    torch.testing.assert_close(gradient(model, x, target).maps, Saliency(model).attribute(x, target=t, abs=False))
    torch.testing.assert_close(gradient(model, x, target, abs=True).maps, Saliency(model).attribute(x, target=t))
    torch.testing.assert_close(gradient_x_input(model, x, target).maps, InputXGradient(model).attribute(x, target=t))


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
def test_integrated_gradients_matches_captum(tiny64, method):
    model, x = tiny64
    base = torch.randn(1, 3, 16, 16, dtype=torch.float64) * 0.1
    ours = integrated_gradients(model, x, [2, 5, 0], baseline=base, steps=20, method=method, batch_size=7)
    ref = IntegratedGradients(model).attribute(x, baselines=base, target=[2, 5, 0], n_steps=20, method=method)
    torch.testing.assert_close(ours.maps, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_quadrature_weights_sum_to_one_and_ig_is_exact_for_a_linear_model(method):
    alphas, w = ig_quadrature(8, method)
    assert abs(w.sum() - 1) < 1e-12 and alphas.min() >= 0 and alphas.max() <= 1
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    e = integrated_gradients(model, x, 2, baseline=0.5, steps=8, method=method)
    expected = (x - 0.5) * model[1].weight[2].detach().reshape(1, 3, 4, 4)
    torch.testing.assert_close(e.maps, expected)
    assert e.extras["delta"].abs().max() < 1e-10


def test_integrated_gradients_completeness_and_chunking(tiny64):
    model, x = tiny64
    e = integrated_gradients(model, x, steps=300, method="riemann_trapezoid", batch_size=128)
    clean = model(x).gather(1, e.target[:, None]).squeeze(1)
    torch.testing.assert_close(e.scores, clean)
    # sum of attributions ~ f(x) - f(0): the path integral of a piecewise-linear ReLU net converges slowly
    assert (e.extras["delta"].abs() / (clean - model(torch.zeros_like(x))[0, e.target]).abs()).max() < 0.05
    small = integrated_gradients(model, x, steps=300, method="riemann_trapezoid", batch_size=11)
    torch.testing.assert_close(small.maps, e.maps)


@pytest.mark.parametrize("target", TARGETS)
def test_guided_backprop_and_deconvnet_match_captum(tiny64, target):
    model, x = tiny64
    t = _captum_target(model, x, target)
    torch.testing.assert_close(guided_backprop(model, x, target).maps, GuidedBackprop(model).attribute(x, target=t))
    torch.testing.assert_close(deconvnet(model, x, target).maps, Deconvolution(model).attribute(x, target=t))


def test_guided_backprop_and_deconvnet_follow_the_rules_through_relu6():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU6(), nn.Linear(16, 4)).double()
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64) * 8  # some units above 6, some below 0
    w1, w2 = model[1].weight.detach(), model[3].weight.detach()
    pre = x.reshape(5, -1) @ w1.T + model[1].bias.detach()
    active = ((pre > 0) & (pre < 6)).double()
    assert 0 < active.mean() < 1 and (pre > 6).any()
    back = w2[2].clamp_min(0).expand(5, -1)  # positive part of the gradient reaching the ReLU6 output
    torch.testing.assert_close(guided_backprop(model, x, 2).maps.reshape(5, -1), (back * active) @ w1)
    torch.testing.assert_close(deconvnet(model, x, 2).maps.reshape(5, -1), back @ w1)
    torch.testing.assert_close(gradient(model, x, 2).maps.reshape(5, -1), (w2[2] * active) @ w1)


def test_guided_backprop_needs_relu_modules(snapshot):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    snap = snapshot(model)
    with pytest.raises(ValueError, match="no nn.ReLU"):
        guided_backprop(model, x)
    snap.assert_unchanged()


@pytest.mark.parametrize("layer", ["features", "features.10", "features.8"])
def test_guided_gradcam_matches_captum_and_its_parts(tiny64, layer):
    model, x = tiny64
    ours = guided_gradcam(model, x, [1, 2, 3], layer, interpolate="nearest")
    mod = dict(model.named_modules())[layer]
    ref = GuidedGradCam(model, mod).attribute(x, target=[1, 2, 3])
    torch.testing.assert_close(ours.maps, ref)
    # bilinear: guided backprop x the ReLU'd Grad-CAM of layer_cams (one shared forward gives the same)
    bil = guided_gradcam(model, x, [1, 2, 3], layer, batch_size=2)
    cam = layer_cams(model, x, "gradcam", [1, 2, 3], layer)["gradcam"]
    torch.testing.assert_close(bil.raw, cam.raw)
    torch.testing.assert_close(bil.maps, guided_backprop(model, x, [1, 2, 3]).maps * cam.maps[:, None])


def test_smoothgrad_without_noise_is_the_gradient(tiny64):
    model, x = tiny64
    g = gradient(model, x).maps
    torch.testing.assert_close(smoothgrad(model, x, n_samples=3, noise_level=0.0).maps, g)
    torch.testing.assert_close(smoothgrad(model, x, n_samples=3, stdev=0.0, squared=True).maps, g * g)
    assert vargrad(model, x, n_samples=3, noise_level=0.0).maps.abs().max() < 1e-12


class Square(nn.Module):
    """f(x) = (sum of x^2, 0): gradient 2x, so SmoothGrad -> 2x and VarGrad -> 4 sigma^2 exactly in expectation."""

    def forward(self, x):
        s = (x ** 2).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_smoothgrad_and_vargrad_noise_statistics():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    x[1] *= 2  # twice the range: twice the noise at the same noise level
    n = 400
    sg = smoothgrad(Square(), x, 0, n_samples=n, noise_level=0.1, batch_size=128)
    sigma = 0.1 * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    torch.testing.assert_close(sg.extras["stdev"], sigma)
    err = (sg.maps - 2 * x) / (2 * sigma.view(-1, 1, 1, 1))  # ~ N(0, 1/n) per element
    assert err.mean().abs() < 0.02 and 0.8 < err.std() * n ** 0.5 < 1.2
    vg = vargrad(Square(), x, 0, n_samples=n, noise_level=0.1, batch_size=128)
    ratio = vg.maps.flatten(1).mean(1) / (4 * sigma ** 2)
    assert ((ratio - 1).abs() < 0.05).all()


def test_smoothgrad_is_reproducible_and_independent_of_chunking_and_batch(tiny64):
    model, x = tiny64
    a = smoothgrad(model, x, n_samples=6, batch_size=5, seed=3)
    torch.testing.assert_close(smoothgrad(model, x, n_samples=6, batch_size=64, seed=3).maps, a.maps)
    torch.testing.assert_close(smoothgrad(model, x[1:2], n_samples=6, batch_size=4, seed=3).maps, a.maps[1:2])
    assert not torch.allclose(smoothgrad(model, x, n_samples=6, seed=4).maps, a.maps)
    ig = smoothgrad(model, x, n_samples=2, base="integrated_gradients", base_options={"steps": 4}, batch_size=3)
    assert ig.maps.shape == x.shape and ig.extras["base"] == "integrated_gradients"


def test_callable_target(tiny64):
    model, x = tiny64
    fn = lambda out: out[:, 2] - out[:, 5]  # noqa: E731
    e = gradient(model, x, fn)
    ref = Saliency(lambda z: (lambda o: o[:, 2] - o[:, 5])(model(z))[:, None]).attribute(x, target=0, abs=False)
    torch.testing.assert_close(e.maps, ref)
    assert e.target is None
    ig = integrated_gradients(model, x, fn, steps=300, method="riemann_trapezoid", batch_size=256)
    d = fn(model(x)) - fn(model(torch.zeros_like(x)))
    assert (ig.extras["delta"].abs() / d.abs()).max() < 0.05


METHODS = {
    "gradient": {}, "gradient_x_input": {}, "integrated_gradients": {"steps": 4},
    "smoothgrad": {"n_samples": 2}, "vargrad": {"n_samples": 2}, "guided_backprop": {}, "deconvnet": {},
    "guided_gradcam": {},
}


@pytest.mark.parametrize("name", list(METHODS))
def test_model_left_as_it_was_in_train_mode_and_under_no_grad(tiny64, name, snapshot):
    model, x = tiny64
    eval_maps = explain(model, x, name, options={name: METHODS[name]}).maps
    model.train()
    model.fc.weight.requires_grad_(False)
    snap = snapshot(model)
    with torch.no_grad():
        e = explain(model, x, name, options={name: METHODS[name]})
    snap.assert_unchanged()
    torch.testing.assert_close(e.maps, eval_maps)  # explained in eval mode whatever the flag was
    assert e.maps.shape == x.shape and e.maps.dtype == x.dtype and not e.maps.requires_grad


@pytest.mark.parametrize("name", ["gradient", "guided_backprop", "integrated_gradients", "guided_gradcam"])
def test_hooks_and_state_restored_when_the_target_raises(tiny64, name, snapshot):
    model, x = tiny64
    snap = snapshot(model)

    def bad(out):
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        explain(model, x, name, target=bad)
    snap.assert_unchanged()


def test_batch_size_does_not_change_results(tiny64):
    model, x = tiny64
    for name in ["gradient", "guided_backprop", "deconvnet", "guided_gradcam"]:
        torch.testing.assert_close(explain(model, x, name, batch_size=2).maps, explain(model, x, name).maps)


def test_explain_routes_names_aliases_and_options(tiny64):
    model, x = tiny64
    out = explain(model, x, ["gradcam", "Guided Backprop", "IG", "saliency", "guided-gradcam"], normalize=True,
                  options={"ig": {"steps": 5}})
    assert list(out) == ["gradcam", "guided_backprop", "integrated_gradients", "gradient", "guided_gradcam"]
    assert out["gradcam"].maps.max() <= 1 and out["integrated_gradients"].extras["steps"] == 5
    torch.testing.assert_close(out["gradient"].maps, gradient(model, x).maps)
    with pytest.raises(TypeError, match="taken by none"):
        explain(model, x, ["gradient", "occlusion"], steps=3)
    with pytest.raises(ValueError, match="did you mean"):
        explain(model, x, "smoothgrd")


def test_errors_name_the_fix(tiny64):
    model, x = tiny64
    with pytest.raises(ValueError, match="integration method"):
        integrated_gradients(model, x, method="simpson")
    with pytest.raises(ValueError, match="baseline of shape"):
        integrated_gradients(model, x, baseline=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="base method"):
        smoothgrad(model, x, base="occlusion")
    with pytest.raises(ValueError, match="interpolate"):
        guided_gradcam(model, x, interpolate="cubic")


def test_pretrained_guided_methods_ignore_the_top_layer_as_adebayo_found(pretrained, sample_batch):
    """Adebayo et al. 2018: randomizing the classifier barely changes Guided Backprop or Deconvnet maps (ReLU6
    network here), while the plain gradient changes a lot."""
    from scipy.stats import spearmanr

    model = pretrained.model
    x = sample_batch[:2]
    target = model(x).argmax(1)
    rand = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        rand._fc.weight.copy_(torch.randn(rand._fc.weight.shape, generator=g) * 0.01)
        rand._fc.bias.zero_()

    def rank_corr(name):
        a = explain(model, x, name, target).map2d()
        b = explain(rand, x, name, target).map2d()
        return min(spearmanr(a[i].flatten(), b[i].flatten())[0] for i in range(len(x)))

    assert rank_corr("guided_backprop") > 0.95 and rank_corr("deconvnet") > 0.95
    assert rank_corr("gradient") < 0.8
