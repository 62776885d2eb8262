"""Quantus's robustness family (Avg-Sensitivity, local Lipschitz estimate): Quantus 0.6 fed the same noise
(its np.random draws replayed through ``perturb``), and the batching rule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretorch.metrics.robustness import average_sensitivity, local_lipschitz_estimate, max_sensitivity

from metric_models import LinearClassifier

SHAPE = (1, 8, 8)


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3)).eval()
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    return model, x


def _gradient(model, inputs, target):
    """Gradient of the target logit: changes with the input (tanh), for both libraries."""
    xi = torch.as_tensor(inputs).float().clone().requires_grad_(True)
    t = torch.as_tensor(target).long()
    out = model(xi).gather(1, t.reshape(-1, 1)).sum()
    (g,) = torch.autograd.grad(out, xi)
    return g


def _quantus_explain(model, inputs, targets, **kwargs):
    return _gradient(model, inputs, targets).numpy()


def _np_noise(kind: str, scale: float):
    def perturb(x, gen):
        if kind == "uniform":
            n = np.random.uniform(low=-scale, high=scale, size=(x.shape[0], x[0].numel()))
        else:
            n = np.random.normal(loc=0.0, scale=scale, size=(x.shape[0], x[0].numel()))
        return x + torch.from_numpy(n).reshape(x.shape).to(x.dtype)
    return perturb


@pytest.mark.numerics
def test_average_sensitivity_matches_quantus(quantus):
    model, x = _setup()
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    np.random.seed(3)
    ours = average_sensitivity(model, x, a, explain_fn=_gradient, n_samples=6, perturb=_np_noise("uniform", 0.2))
    np.random.seed(3)
    metric = quantus.AvgSensitivity(nr_samples=6, lower_bound=0.2, disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                    channel_first=True, explain_func=_quantus_explain)
    assert np.allclose(ours.numpy(), theirs, rtol=1e-5)
    assert np.ptp(theirs) > 0
    # Max-Sensitivity over the same draws is their largest value, the average their mean.
    np.random.seed(3)
    top = max_sensitivity(model, x, a, explain_fn=_gradient, n_samples=6, perturb=_np_noise("uniform", 0.2))
    assert (top >= ours - 1e-7).all()


@pytest.mark.numerics
def test_local_lipschitz_estimate_matches_quantus(quantus):
    # Quantus normalises the maps by the batch's largest value: one image per call makes that the image's own.
    model, x = _setup()
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    for i in range(3):
        np.random.seed(4)
        ours = local_lipschitz_estimate(model, x[i:i + 1], a[i:i + 1], explain_fn=_gradient, n_samples=5,
                                        perturb=_np_noise("gaussian", 0.1))
        np.random.seed(4)
        metric = quantus.LocalLipschitzEstimate(nr_samples=5, perturb_std=0.1, disable_warnings=True)
        theirs = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(), a_batch=a[i:i + 1].numpy(),
                        device="cpu", channel_first=True, explain_func=_quantus_explain, softmax=False)
        assert np.allclose(ours.numpy(), theirs, rtol=1e-5)


def test_rows_are_reexplained_together_and_seeded():
    model, x = _setup()
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    calls = []

    def counting(m, inputs, target):
        calls.append(inputs.shape[0])
        return _gradient(m, inputs, target)

    v1 = average_sensitivity(model, x, a, explain_fn=counting, n_samples=4, batch_size=5, seed=1)
    assert calls == [5, 5, 2]  # 3 images x 4 copies, 5 rows per call
    v2 = average_sensitivity(model, x, a, explain_fn=_gradient, n_samples=4, batch_size=64, seed=1)
    assert torch.allclose(v1, v2, atol=1e-6)
    # Explaining the clean maps again changes nothing: zero sensitivity and Lipschitz estimate.
    same = local_lipschitz_estimate(model, x, a, explain_fn=lambda m, xx, t: a.repeat_interleave(4, 0)[:len(xx)],
                                    n_samples=4, batch_size=64)
    assert torch.allclose(same, torch.zeros(3))
    with pytest.raises(ValueError, match="noise"):
        from interpretorch.metrics.robustness import explanation_changes

        explanation_changes(model, x, a, explain_fn=_gradient, measure=lambda *t: t[0][:, 0], noise="pink")
