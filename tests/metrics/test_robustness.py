"""Infidelity and Max-Sensitivity: exact cases on linear models, and Quantus on the same perturbations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretorch.explanation import Explanation
from interpretorch.metrics import infidelity, max_sensitivity
from interpretorch.models import TinyCNN

from metric_models import LinearClassifier, LinearScore


def fixed_perturbations(perts: list[torch.Tensor]):
    """A perturbation callable that hands out the given tensors in order (to know I exactly)."""
    it = iter(perts)
    return lambda x, gen: next(it)


def test_infidelity_of_the_exact_gradient_is_zero():
    # f(x) = w . x, so f(x) - f(x - I) = w . I exactly: Phi = w has zero infidelity, any I.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 5, 5, generator=g)
    model = LinearScore(w)
    x = torch.randn(3, 2, 5, 5, generator=g)
    phi = w.expand(3, -1, -1, -1)
    for pert in ("gaussian", "square"):
        v = infidelity(model, x, phi, target=0, perturbation=pert, normalize=False, n_perturb=8)
        assert torch.allclose(v, torch.zeros(3), atol=1e-8)
    # A scaled map: normalise=True finds beta = 1/2 and gives 0; unnormalised it is mean((w . I)^2).
    perts = [torch.randn(3, 2, 5, 5, generator=g) for _ in range(6)]
    v = infidelity(model, x, 2 * phi, target=0, perturbation=fixed_perturbations(perts), n_perturb=6,
                   normalize=False)
    expect = torch.stack([(p * w).flatten(1).sum(1) ** 2 for p in perts], 1).mean(1)
    assert torch.allclose(v, expect, rtol=1e-5)
    v = infidelity(model, x, 2 * phi, target=0, perturbation=fixed_perturbations(perts), n_perturb=6)
    assert torch.allclose(v, torch.zeros(3), atol=1e-8)


def test_infidelity_by_hand_with_optimal_scaling():
    g = torch.Generator().manual_seed(1)
    model = LinearClassifier((1, 4, 4), classes=3)
    x = torch.randn(2, 1, 4, 4, generator=g)
    maps = torch.randn(2, 4, 4, generator=g)  # 2-D maps count for every channel of a pixel
    perts = [torch.randn(2, 1, 4, 4, generator=g) for _ in range(5)]
    v = infidelity(model, x, maps, perturbation=fixed_perturbations(perts), n_perturb=5, softmax=True)
    with torch.no_grad():
        p = model(x).softmax(1)
        idx = p.argmax(1)
        f = p.gather(1, idx[:, None])[:, 0]
        d = torch.stack([f - model(x - q).softmax(1).gather(1, idx[:, None])[:, 0] for q in perts], 1).double()
    e = torch.stack([(q[:, 0] * maps).flatten(1).sum(1) for q in perts], 1).double()
    beta = (e * d).sum(1) / (e * e).sum(1)
    expect = ((beta[:, None] * e - d) ** 2).mean(1)
    assert torch.allclose(v.double(), expect, rtol=1e-4)


def test_infidelity_square_perturbation_and_forward_count():
    from metric_models import Counting

    g = torch.Generator().manual_seed(2)
    model = Counting(LinearScore(torch.ones(1, 8, 8)))
    x = torch.randn(3, 1, 8, 8, generator=g)
    v = infidelity(model, x, torch.ones(3, 8, 8), target=0, perturbation="square", square=0.5, n_perturb=4,
                   batch_size=5, normalize=False)
    assert torch.allclose(v, torch.zeros(3), atol=1e-8)
    assert model.rows == 3 + 3 * 4
    with pytest.raises(ValueError, match="unknown perturbation"):
        infidelity(model, x, torch.ones(3, 8, 8), perturbation="salt")


def test_infidelity_matches_quantus(quantus):
    # Quantus's Infidelity removes patches cumulatively in raster order (to perturb_baseline) and
    # takes the mean squared error between f(x) - f(x_k) and sum(Phi * (x - x_k)), without the
    # optimal scaling; its n_perturb_samples repeats that deterministic sequence. We feed the same
    # perturbations I_k = x - x_k through our callable hook and set normalize=False.
    g = torch.Generator().manual_seed(3)
    model = LinearClassifier((3, 8, 8), classes=4).eval()
    x = torch.randn(3, 3, 8, 8, generator=g)
    maps = torch.randn(3, 8, 8, generator=g)
    patch = 4
    perts, cur = [], x.clone()
    for by in range(0, 8, patch):
        for bx in range(0, 8, patch):
            cur = cur.clone()
            cur[:, :, by:by + patch, bx:bx + patch] = 0.0
            perts.append(x - cur)
    ours = infidelity(model, x, maps, perturbation=fixed_perturbations(perts), n_perturb=len(perts),
                      normalize=False, softmax=False)
    y = model(x).argmax(1).numpy()
    metric = quantus.Infidelity(perturb_patch_sizes=[patch], n_perturb_samples=1, perturb_baseline=0.0,
                                disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y, a_batch=maps[:, None].numpy(), device="cpu",
                    channel_first=True, softmax=False)
    assert np.allclose(ours.numpy(), np.asarray(theirs), rtol=1e-5)
    assert (ours > 1e-3).all()


def grad_x_input(model, x, target):
    """Gradient x input of the target logit (a reference explain_fn written for the tests)."""
    x = x.detach().requires_grad_(True)
    out = model(x)
    idx = torch.as_tensor(target).reshape(-1).expand(x.shape[0])
    g, = torch.autograd.grad(out.gather(1, idx[:, None]).sum(), x)
    return Explanation(maps=(g * x).detach(), method="gradient_x_input", target=idx)


def test_max_sensitivity_by_hand():
    # For f = w . x, gradient x input is w * x, so Phi(y) - Phi(x) = w * (y - x) is known exactly.
    g = torch.Generator().manual_seed(4)
    w = torch.randn(1, 6, 6, generator=g)
    model = LinearScore(w)
    x = torch.randn(2, 1, 6, 6, generator=g)
    phi = grad_x_input(model, x, 0)
    noises = [torch.empty_like(x).uniform_(-0.1, 0.1, generator=g) for _ in range(5)]
    it = iter(noises)
    v = max_sensitivity(model, x, phi, target=0, explain_fn=grad_x_input, n_samples=5,
                        perturb=lambda xx, gen: xx + next(it))
    num = torch.stack([(w * n).flatten(1).norm(dim=1) for n in noises], 1)
    expect = (num / phi.maps.flatten(1).norm(dim=1)[:, None]).max(1).values
    assert torch.allclose(v, expect, rtol=1e-5)
    # Absolute version, and a constant explanation (the plain gradient) is perfectly stable.
    it = iter(noises)
    v = max_sensitivity(model, x, phi, target=0, explain_fn=grad_x_input, n_samples=5, relative=False,
                        perturb=lambda xx, gen: xx + next(it))
    assert torch.allclose(v, num.max(1).values, rtol=1e-5)
    const = lambda m, xx, t: Explanation(maps=w.expand(xx.shape[0], -1, -1, -1).clone(), method="gradient")
    v = max_sensitivity(model, x, const(model, x, 0), target=0, explain_fn=const, n_samples=4)
    assert torch.equal(v, torch.zeros(2))


def test_max_sensitivity_default_noise_radius_and_targets():
    # Uniform noise in the L-inf ball of the radius; the explain_fn gets the clean pass's classes.
    g = torch.Generator().manual_seed(5)
    model = LinearClassifier((1, 5, 5), classes=4).eval()
    x = torch.randn(3, 1, 5, 5, generator=g)
    seen = []

    def ident(m, xx, t):
        seen.append((xx.clone(), torch.as_tensor(t).clone()))
        return Explanation(maps=xx[:, 0].clone(), method="identity")

    v = max_sensitivity(model, x, x[:, 0], explain_fn=ident, radius=0.05, n_samples=6, relative=False,
                        batch_size=4)
    xs = torch.cat([s[0] for s in seen])
    ts = torch.cat([s[1] for s in seen])
    assert xs.shape[0] == 18 and max(s[0].shape[0] for s in seen) <= 4
    assert torch.equal(ts, model(x).argmax(1).repeat_interleave(6))
    dev = xs - x.repeat_interleave(6, 0)
    assert dev.abs().max() <= 0.05 and dev.abs().max() > 0.04
    assert torch.allclose(v, dev.flatten(1).norm(dim=1).reshape(3, 6).max(1).values, rtol=1e-5)


def test_max_sensitivity_matches_quantus(quantus):
    # Same noise samples (drawn here, handed to both), same explain function (gradient x input),
    # Frobenius norms of the difference over the clean attribution's norm, max over samples.
    g = torch.Generator().manual_seed(6)
    model = TinyCNN(num_classes=4, in_channels=1).eval()
    x = torch.randn(3, 1, 12, 12, generator=g)
    noises = [np.random.default_rng(k).uniform(-0.2, 0.2, size=x.shape).astype(np.float32) for k in range(4)]
    y = model(x).argmax(1)
    phi = grad_x_input(model, x, y)
    ours = max_sensitivity(model, x, phi, explain_fn=grad_x_input, n_samples=4,
                           perturb=(lambda it: lambda xx, gen: xx + torch.from_numpy(next(it)))(iter(noises)))

    q_iter = iter(noises)

    def q_perturb(arr, indices, **kw):
        return arr + next(q_iter).reshape(arr.shape)

    def q_explain(model, inputs, targets, **kw):
        e = grad_x_input(model, torch.as_tensor(inputs), torch.as_tensor(targets))
        return e.maps.numpy()

    metric = quantus.MaxSensitivity(nr_samples=4, perturb_func=q_perturb, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=phi.maps.numpy(),
                    explain_func=q_explain, device="cpu", channel_first=True)
    assert np.allclose(ours.numpy(), np.asarray(theirs), rtol=1e-4)
    assert (ours > 0.01).all()


def test_robustness_metrics_leave_the_model_unchanged(snapshot):
    model = TinyCNN(num_classes=3)
    model.train()
    snap = snapshot(model)
    x = torch.randn(2, 3, 12, 12)
    maps = torch.rand(2, 12, 12)
    infidelity(model, x, maps, n_perturb=3)
    const = lambda m, xx, t: Explanation(maps=torch.ones(xx.shape[0], 12, 12), method="const")
    max_sensitivity(model, x, maps, explain_fn=const, n_samples=2)
    snap.assert_unchanged()
    with pytest.raises(TypeError, match="explain_fn"):
        max_sensitivity(model, x, maps, explain_fn=None)
