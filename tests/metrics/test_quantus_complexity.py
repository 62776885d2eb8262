"""Sparseness, complexity and effective complexity: hand-computed cases and Quantus 0.6."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interpretorch.metrics.complexity import complexity, effective_complexity, max_normalised, sparseness


def _maps(seed: int, b: int = 5, shape: tuple[int, ...] = (1, 9, 11)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(b, *shape, generator=g, dtype=torch.float64)
    m[m.abs() < 0.3] = 0.0  # some exact zeros: effective complexity counts them out
    # Every map's largest |value| is 2, so Quantus's batch-wide max equals each image's own max.
    flat = m.reshape(b, -1)
    m = (flat / flat.abs().amax(1, keepdim=True) * 2).reshape(m.shape)
    return m


def test_by_hand():
    # a = [0, 1, 3] (max 3): normalised [0, 1/3, 1].
    a = torch.tensor([[0.0, -1.0, 3.0]])
    p = torch.tensor([0.0, 0.25, 0.75])
    assert torch.allclose(complexity(a), -(p * torch.log(p + 1e-12)).sum()[None].double())
    # Gini of sorted [e, 1/3 + e, 1 + e] with e = 1e-7: sum((2k - n - 1) a_k) / (n sum a).
    e = 1e-7
    v = [e, 1 / 3 + e, 1 + e]
    gini = ((-2) * v[0] + 0 * v[1] + 2 * v[2]) / (3 * sum(v))
    assert math.isclose(float(sparseness(a)), gini, rel_tol=1e-12)
    assert float(effective_complexity(a, eps=0.5)) == 1.0 and float(effective_complexity(a)) == 2.0
    # One pixel holding everything: maximally sparse, zero entropy; uniform: Gini 0, entropy log n.
    one = torch.zeros(1, 100)
    one[0, 7] = 5.0
    assert float(sparseness(one)) > 0.98 and abs(float(complexity(one))) < 1e-9
    flat = torch.ones(1, 100)
    assert abs(float(sparseness(flat))) < 1e-9 and math.isclose(float(complexity(flat)), math.log(100), rel_tol=1e-9)


def test_per_image_normalisation_and_errors():
    a = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    assert torch.equal(max_normalised(a), torch.tensor([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    assert torch.isnan(complexity(a)[1])  # an empty map has no shares
    with pytest.raises(ValueError, match="eps"):
        effective_complexity(a, eps=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        sparseness(torch.tensor([[float("nan"), 1.0]]))


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["Sparseness", "Complexity", "EffectiveComplexity"])
def test_matches_quantus(quantus, name):
    ours_fn = {"Sparseness": sparseness, "Complexity": complexity, "EffectiveComplexity": effective_complexity}[name]
    a = _maps(1)
    x = np.zeros((a.shape[0], 1, 9, 11), dtype=np.float32)
    metric = getattr(quantus, name)(disable_warnings=True)
    theirs = np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(a.shape[0], dtype=int), a_batch=a.numpy(),
                               channel_first=True), dtype=np.float64)
    ours = ours_fn(a).numpy()
    assert np.allclose(ours, theirs, rtol=1e-5, atol=1e-9)
    assert np.ptp(theirs) > 0  # the images differ: the comparison is not between constants


@pytest.mark.numerics
def test_quantus_normalises_by_the_batch_max(quantus):
    # Documented difference: Quantus divides the whole batch by its largest |value|. Image 1 = image 0 / 10:
    # with eps = 0.05 Quantus counts its values 0.01..0.1 against 1 (so only 0.1 passes: it depends on image 0);
    # ours counts each image against its own maximum (both images give 3).
    a = torch.tensor([[[[0.1, 0.5, 1.0, 0.0]]], [[[0.01, 0.05, 0.1, 0.0]]]], dtype=torch.float64)
    metric = quantus.EffectiveComplexity(eps=0.05, disable_warnings=True)
    theirs = metric(model=None, x_batch=np.zeros((2, 1, 1, 4), np.float32), y_batch=np.zeros(2, int),
                    a_batch=a.numpy(), channel_first=True)
    assert list(theirs) == [3, 1]
    assert effective_complexity(a, eps=0.05).tolist() == [3.0, 3.0]
