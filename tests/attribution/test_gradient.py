"""Gradient attributions: agreement with Captum, exact results on small analytic models, the model-state contract."""
import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
                         NoiseTunnel, Saliency)
from torch import nn

from interpretorch.attribution import (deconvnet, explain, gradient, gradient_x_input, guided_backprop,
                                       guided_gradcam, integrated_gradients, layer_cams, smoothgrad, vargrad)
from interpretorch.attribution.integrated import ig_baseline, ig_quadrature
from interpretorch.attribution.noise import unit_noise
from interpretorch.imageops import gaussian_blur
from interpretorch.models import TinyCNN

TARGETS = ["top1", 3, [1, 4, 7]]


@pytest.fixture
def tiny64():
    """TinyCNN in float64 (in-place ReLUs, non-trivial BatchNorm, 10 classes) and a batch of 3 images."""
    g = torch.Generator().manual_seed(0)
    return TinyCNN().double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g)


def assert_agree(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """The issue's agreement criterion: max |ours - ref| <= tol x max |ref| (and the same shape)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0, "the reference map is all zeros: the comparison would prove nothing"
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


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


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle",
                                    "riemann_trapezoid"])
def test_integrated_gradients_matches_captum(tiny64, method):
    model, x = tiny64
    base = torch.randn(1, 3, 16, 16, dtype=torch.float64) * 0.1
    ours = integrated_gradients(model, x, [2, 5, 0], baseline=base, steps=20, method=method, batch_size=7)
    ref = IntegratedGradients(model).attribute(x, baselines=base, target=[2, 5, 0], n_steps=20, method=method)
    if method == "riemann_trapezoid":
        # Captum's trapezoid places 20 points 1/19 apart but weights them 1/20 (ends halved): its weights sum to
        # 19/20, so its attributions are ours x 19/20 (ours keep completeness exact on a linear model).
        ref = ref * 20 / 19
    assert_agree(ours.maps, ref)
    torch.testing.assert_close(ours.maps, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name", ["zeros", "blur", "uniform"])
def test_integrated_gradients_named_baselines(tiny64, name):
    model, x = tiny64
    e = integrated_gradients(model, x, [2, 5, 0], baseline=name, steps=8, batch_size=10, blur_sigma=1.5, seed=3)
    base = ig_baseline(name, x, blur_sigma=1.5, seed=3)
    torch.testing.assert_close(e.extras["baseline"], base)
    ref = IntegratedGradients(model).attribute(x, baselines=base, target=[2, 5, 0], n_steps=8)
    assert_agree(e.maps, ref)
    # the completeness gap is reported against f(baseline)
    fb = model(base).gather(1, torch.tensor([[2], [5], [0]])).squeeze(1).detach()
    torch.testing.assert_close(e.extras["baseline_scores"], fb)
    change = e.scores - fb
    torch.testing.assert_close(e.extras["delta"], e.maps.flatten(1).sum(1) - change)
    torch.testing.assert_close(e.extras["delta_rel"], e.extras["delta"] / change)


def test_ig_baselines_are_what_their_names_say(tiny64):
    from scipy.ndimage import gaussian_filter

    _, x = tiny64
    assert torch.equal(ig_baseline("zeros", x), torch.zeros_like(x))
    # blur: a Gaussian of sigma pixels with mirrored borders, truncated at 3 sigma (scipy's gaussian_filter)
    for sigma in (1.0, 2.5):
        ref = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="mirror", truncate=3.0)
        torch.testing.assert_close(gaussian_blur(x, sigma), torch.from_numpy(ref))
    torch.testing.assert_close(ig_baseline("blur", x, blur_sigma=2.5), gaussian_blur(x, 2.5))
    # uniform: noise in [min, max] of each image, one pattern (fixed by the seed) for every image
    u = ig_baseline("uniform", x, seed=1)
    lo, hi = x.flatten(1).amin(1), x.flatten(1).amax(1)
    unit = (u - lo.view(-1, 1, 1, 1)) / (hi - lo).view(-1, 1, 1, 1)
    assert unit.min() >= 0 and unit.max() <= 1 and abs(unit.mean() - 0.5) < 0.03 and abs(unit.std() - 12 ** -0.5) < 0.02
    torch.testing.assert_close(unit[0], unit[2])
    torch.testing.assert_close(ig_baseline("uniform", x[1:2], seed=1), u[1:2])
    assert not torch.allclose(ig_baseline("uniform", x, seed=2), u)
    with pytest.raises(ValueError, match="unknown baseline 'black'"):
        ig_baseline("black", x)


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


@pytest.mark.numerics
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


def test_guided_backprop_needs_relu_activations(snapshot):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    snap = snapshot(model)
    for fn in (guided_backprop, deconvnet, guided_gradcam):
        with pytest.raises(ValueError, match="no ReLU-like activation"):
            fn(model, x)
        snap.assert_unchanged()


class FunctionalTiny(TinyCNN):
    """TinyCNN with its ReLUs written as functions in forward: F.relu(inplace), torch.relu_, Tensor.clamp(min=0)."""

    def forward(self, x):
        f = self.features
        x = F.relu(f[1](f[0](x)), inplace=True)
        x = torch.relu_(f[5](f[4](f[3](x))))
        x = f[9](f[8](f[7](x))).clamp(min=0)
        return self.fc(self.flatten(self.pool(x)))


def test_guided_backprop_reaches_functional_relus(tiny64):
    """The functional twin gives what Captum gives on the module model (Captum's own hooks miss the functional
    ReLUs: on the twin it returns plain gradients)."""
    model, x = tiny64
    twin = FunctionalTiny().double().eval()
    twin.load_state_dict(model.state_dict())
    torch.testing.assert_close(twin(x), model(x))
    t = [1, 2, 3]
    gb = guided_backprop(twin, x, t)
    assert gb.extras == {"relu_reached": 3, "relu_unreached": 0}
    assert_agree(gb.maps, GuidedBackprop(model).attribute(x, target=t))
    assert_agree(deconvnet(twin, x, t).maps, Deconvolution(model).attribute(x, target=t))
    assert_agree(guided_gradcam(twin, x, t, "features.8", interpolate="nearest").maps,
                 GuidedGradCam(model, model.features[8]).attribute(x, target=t))
    assert not torch.allclose(GuidedBackprop(twin).attribute(x, target=t), gb.maps)


class FunctionalRelu6(nn.Module):
    """Three ReLU6 written three ways (F.relu6, F.hardtanh(0, 6) in place, torch.clamp(0, 6)) and a ReLU via
    F.threshold(x, 0, 0)."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4, self.out = (nn.Linear(12, 12).double() for _ in range(5))

    def forward(self, x):
        h = F.relu6(self.l1(x.flatten(1)))
        h = F.hardtanh(self.l2(h), 0.0, 6.0, inplace=True)
        h = torch.clamp(self.l3(h), 0, 6)
        h = F.threshold(self.l4(h), 0.0, 0.0)
        return self.out(h)


def _manual_rule(model, x, cls, mode):
    """Backward by hand through FunctionalRelu6 with the guided / deconvnet / standard rule."""
    layers = [model.l1, model.l2, model.l3, model.l4]
    h, masks = x.flatten(1), []
    for i, lin in enumerate(layers):
        pre = h @ lin.weight.T + lin.bias
        hi = None if i == 3 else 6.0
        masks.append(((pre > 0) & (pre < hi)) if hi else (pre > 0))
        h = pre.clamp(0, hi)
    g = model.out.weight[cls].expand(x.shape[0], -1)
    for lin, m in zip(reversed(layers), reversed(masks)):
        if mode in ("guided", "deconvnet"):
            g = g.clamp_min(0)
        if mode in ("guided", "standard"):
            g = g * m
        g = g @ lin.weight
    return g.reshape(x.shape).detach()


def test_guided_backprop_and_deconvnet_rules_through_functional_relu6():
    torch.manual_seed(4)
    model = FunctionalRelu6()
    with torch.no_grad():
        for lin in (model.l1, model.l2, model.l3, model.l4):
            lin.weight.mul_(4)  # some units above 6, some below 0
    x = torch.randn(6, 3, 2, 2, dtype=torch.float64) * 3
    gb = guided_backprop(model, x, 2)
    assert gb.extras == {"relu_reached": 4, "relu_unreached": 0}
    torch.testing.assert_close(gb.maps, _manual_rule(model, x, 2, "guided"))
    torch.testing.assert_close(deconvnet(model, x, 2).maps, _manual_rule(model, x, 2, "deconvnet"))
    torch.testing.assert_close(gradient(model, x, 2).maps, _manual_rule(model, x, 2, "standard"))
    assert not torch.allclose(gb.maps, gradient(model, x, 2).maps)


def test_relus_out_of_reach_are_reported(snapshot):
    """ReLUs inside TorchScript run below Python: a partly scripted model warns with the count, a fully scripted
    one raises; the model is left as it was either way."""
    torch.manual_seed(0)

    class Half(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
            self.b = nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))

        def forward(self, x):
            return self.b(self.a(x))

    model, x = Half(), torch.randn(2, 3, 8, 8)
    snap = snapshot(model)
    with pytest.warns(UserWarning, match=r"1 of 2 ReLU-like activations of Half ran where the rule cannot reach"):
        e = guided_backprop(model, x)
    assert e.extras == {"relu_reached": 1, "relu_unreached": 1}
    snap.assert_unchanged()
    scripted = torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU6(),
                                              nn.Flatten(), nn.Linear(4 * 4 * 4, 3)))
    with pytest.raises(ValueError, match="2 ReLU-like operations ran inside TorchScript"):
        deconvnet(scripted, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a model fully in reach raises no warning
        guided_backprop(TinyCNN().eval(), x)


def test_relu_rule_leaves_target_functions_alone(tiny64):
    """A clamp in a callable target is not the model's: it keeps its true gradient under the guided rule."""
    model, x = tiny64
    fn = lambda out: out[:, 2].clamp(min=0) - out[:, 5]  # noqa: E731
    plain = lambda out: out[:, 2] * (out[:, 2] > 0) - out[:, 5]  # noqa: E731
    torch.testing.assert_close(guided_backprop(model, x, fn).maps, guided_backprop(model, x, plain).maps)


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


class _SameNoise:
    """Stands in for torch.normal inside Captum's NoiseTunnel: hands out our unit noise (sample-numbered, as our
    SmoothGrad draws it) times the stdev, checking the shape Captum asks for."""

    def __init__(self, monkeypatch, rows_per_call, shape, stdev, seed):
        self.calls, self.rows, self.shape, self.stdev, self.seed = 0, rows_per_call, shape, stdev, seed
        real = torch.normal

        def fake(mean, std, *args, **kwargs):
            if not (isinstance(mean, (int, float)) and mean == 0 and isinstance(std, torch.Tensor)):
                return real(mean, std, *args, **kwargs)
            samples = self.rows[self.calls]
            self.calls += 1
            assert tuple(std.shape) == (len(samples),) + self.shape
            assert torch.allclose(std.double(), torch.tensor(self.stdev, dtype=torch.float64))
            return self.stdev * unit_noise(samples, self.shape, self.seed, dtype=torch.float64)

        monkeypatch.setattr(torch, "normal", fake)


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_matches_captum_with_the_same_noise(tiny64, monkeypatch, nt_type):
    """Captum's NoiseTunnel(Saliency) fed our seeded noise (its torch.normal replaced) gives our SmoothGrad,
    SmoothGrad-Squared and VarGrad. Captum takes one stdev per call: each image is run with its own
    noise_level x (max - min), in two partitions of samples (3 + 2)."""
    model, x = tiny64
    n, level, seed, targets = 5, 0.2, 11, [1, 6, 3]
    kw = dict(n_samples=n, noise_level=level, seed=seed, batch_size=4)  # chunks of 4 rows cut across images
    if nt_type == "vargrad":
        ours = vargrad(model, x, targets, **kw)
    else:
        ours = smoothgrad(model, x, targets, squared=nt_type == "smoothgrad_sq", **kw)
    sigma = level * (x.flatten(1).amax(1) - x.flatten(1).amin(1))
    torch.testing.assert_close(ours.extras["stdev"], sigma)
    for i, t in enumerate(targets):
        noise = _SameNoise(monkeypatch, [[0, 1, 2], [3, 4]], tuple(x.shape[1:]), float(sigma[i]), seed)
        ref = NoiseTunnel(Saliency(model)).attribute(x[i:i + 1], nt_type=nt_type, nt_samples=n,
                                                    nt_samples_batch_size=3, stdevs=float(sigma[i]), target=t,
                                                    abs=False)
        assert noise.calls == 2
        assert_agree(ours.maps[i:i + 1], ref)


def test_noise_tunnel_batch_with_a_given_stdev_matches_captum(tiny64, monkeypatch):
    """A whole batch with one ``stdev`` in input units: Captum's rows are image-major (image 0's samples first),
    each image gets the same numbered samples; the base can be Gradient x Input."""
    model, x = tiny64
    n, stdev, seed = 4, 0.3, 2
    ours = smoothgrad(model, x, "top1", n_samples=n, stdev=stdev, seed=seed, base="gradient_x_input", batch_size=5)
    rows = [[s for _ in range(3) for s in range(n)]]
    _SameNoise(monkeypatch, rows, tuple(x.shape[1:]), stdev, seed)
    ref = NoiseTunnel(InputXGradient(model)).attribute(x, nt_type="smoothgrad", nt_samples=n, stdevs=stdev,
                                                      target=model(x).argmax(1))
    assert_agree(ours.maps, ref)


def test_noise_is_seeded_per_sample():
    a = unit_noise([0, 1, 2], (2, 3), seed=5)
    torch.testing.assert_close(unit_noise([2, 0], (2, 3), seed=5), a[[2, 0]])
    assert not torch.allclose(unit_noise([0], (2, 3), seed=6), a[:1])
    big = unit_noise(list(range(200)), (3, 8, 8), seed=0, dtype=torch.float64)
    assert abs(big.mean()) < 0.02 and abs(big.std() - 1) < 0.02


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


@pytest.mark.numerics
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


BATCHED = {
    "gradient": {}, "gradient_x_input": {}, "guided_backprop": {}, "deconvnet": {}, "guided_gradcam": {},
    "integrated_gradients": {"steps": 5}, "integrated_gradients/blur": {"steps": 4, "baseline": "blur"},
    "integrated_gradients/uniform": {"steps": 4, "baseline": "uniform", "method": "riemann_trapezoid"},
    "smoothgrad": {"n_samples": 4}, "vargrad": {"n_samples": 3, "base": "guided_backprop"},
}


@pytest.mark.numerics
@pytest.mark.parametrize("case", list(BATCHED))
def test_a_batch_of_4_equals_4_single_calls(case):
    """Rows (steps, noisy samples) of all images are chunked together by batch_size=3, which cuts across images;
    every image still gets exactly what it gets alone."""
    name = case.split("/")[0]
    model = TinyCNN().double().eval()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    targets = [3, 0, 7, 3]
    opts = {name: BATCHED[case]}
    batch = explain(model, x, name, targets, batch_size=3, options=opts)
    singles = [explain(model, x[i:i + 1], name, [targets[i]], batch_size=3, options=opts) for i in range(4)]
    torch.testing.assert_close(batch.maps, torch.cat([e.maps for e in singles]))
    torch.testing.assert_close(batch.scores, torch.cat([e.scores for e in singles]))
    assert batch.target.tolist() == targets
    if name == "integrated_gradients":
        torch.testing.assert_close(batch.extras["delta"], torch.cat([e.extras["delta"] for e in singles]))


@pytest.mark.numerics
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


@pytest.mark.numerics
def test_pretrained_integrated_gradients_completeness_at_200_steps(pretrained):
    """EfficientNet-Lite0 (ReLU6, so the score is piecewise linear along the path) on chelsea: from a black image
    (a given baseline tensor) 200 Gauss-Legendre steps put the sum of attributions within 1.5% of f(x) - f(x')
    (Sundararajan et al. ask for 5%).

    The photo is downscaled to 112 px: the network is convolutional with global pooling, so completeness is the
    same property on a quarter of the pixels at a quarter of the cost (8 s of CPU instead of about 30 s; the
    224 px run took 181 s on a loaded 2-core machine). Measured there (torch 2.13, AMD EPYC AVX2, one thread):
    Egyptian cat at p = 0.85, f(x) - f(x') = 23.06, gap -4.7% at 50 steps, -2.4% at 100, -0.85% at 200.

    From the zeros baseline (the mean colour after normalisation) the score rises by ~70% of f(x) - f(x') within
    the first 3% of the path, through hundreds of linear pieces (gradients there checked against finite
    differences in float64), so every 200-step rule is off by 2-16% there: the gap is reported, not hidden.
    """
    from skimage import data

    photo = data.chelsea()
    x = F.interpolate(pretrained.preprocess([photo]), size=(112, 112), mode="area")
    black = F.interpolate(pretrained.preprocess([np.zeros_like(photo)]), size=(112, 112), mode="area")
    model = pretrained.model
    e = integrated_gradients(model, x, "top1", baseline=black, steps=200, method="gausslegendre", batch_size=50)
    with torch.no_grad():
        fx, fb = model(x)[0, e.target[0]], model(black)[0, e.target[0]]
    change = float(fx - fb)
    assert change > 5  # a confident prediction, far above the black image's score
    gap = float(e.maps.double().sum()) - change
    torch.testing.assert_close(float(e.extras["delta"][0]), gap, atol=1e-3, rtol=0)
    assert abs(gap) < 0.015 * abs(change), f"completeness gap {gap:.4f} is {100 * gap / change:.2f}% of {change:.3f}"
    assert abs(float(e.extras["delta_rel"][0])) < 0.015


@pytest.mark.numerics
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
