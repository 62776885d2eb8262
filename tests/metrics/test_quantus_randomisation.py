"""Random logit: Quantus 0.6 on the same maps and classes (its np.random draw replayed), and the class draw."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretorch.metrics.randomisation import flat_ssim, off_classes, random_logit


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 6)).eval()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x


def _gradient(model, inputs, target):
    xi = torch.as_tensor(inputs).float().clone().requires_grad_(True)
    out = model(xi).gather(1, torch.as_tensor(target).long().reshape(-1, 1)).sum()
    return torch.autograd.grad(out, xi)[0]


@pytest.mark.numerics
def test_random_logit_matches_quantus(quantus):
    # Quantus seeds np.random with its seed and draws np.random.randint(0, K - 1, B): the k-th class other than
    # the label. Its maps are normalised by the batch's maximum: one image per call makes that the image's own.
    model, x = _setup()
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    np.random.seed(42)
    draws = np.random.randint(0, 5, 4)
    classes = torch.from_numpy(draws) + (torch.from_numpy(draws) >= y).long()
    for i in range(4):
        np.random.seed(42)
        pick = np.random.randint(0, 5, 1)
        cls = torch.from_numpy(pick) + (torch.from_numpy(pick) >= y[i:i + 1]).long()
        ours = random_logit(model, x[i:i + 1], a[i:i + 1], explain_fn=_gradient, classes=cls)
        metric = quantus.RandomLogit(num_classes=6, seed=42, disable_warnings=True)
        theirs = metric(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                        a_batch=a[i:i + 1].numpy(), device="cpu", channel_first=True,
                        explain_func=lambda model, inputs, targets, **kw: _gradient(model, inputs, targets).numpy())
        assert np.allclose(ours.numpy(), theirs, rtol=1e-5, atol=1e-7)
    # the same scheme with our own generator: never the explained class, every other class reachable
    assert (classes != y).all()
    many = off_classes(torch.zeros(2000, dtype=torch.long), 6, seed=0)
    assert set(many.tolist()) == {1, 2, 3, 4, 5}


def test_random_logit_by_hand_and_errors():
    model, x = _setup()
    y = model(x).argmax(1)
    a = _gradient(model, x, y)
    # A method that ignores the class gives the same map for every class: SSIM 1 (the worst).
    same = random_logit(model, x, a, explain_fn=lambda m, xx, t: a[: len(xx)], seed=1)
    assert torch.allclose(same, torch.ones(4, dtype=torch.float64))
    assert torch.allclose(flat_ssim(a, a), torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="other than"):
        random_logit(model, x, a, explain_fn=_gradient, classes=y)
    with pytest.raises(ValueError, match="callable"):
        random_logit(model, x, a, lambda out: out[:, 0], explain_fn=_gradient)
