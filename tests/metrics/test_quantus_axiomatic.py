"""Quantus's axiomatic family (completeness, non-sensitivity): Quantus 0.6 on the same cases and hand-computed
cases where Quantus reports something else."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretorch.metrics.axiomatic import completeness, completeness_terms, non_sensitivity

from metric_models import Counting, LinearClassifier, LinearScore

SHAPE = (1, 10, 10)


@pytest.mark.numerics
def test_completeness_terms_match_quantus(quantus):
    # Quantus returns sum(a) == f(x) - f(baseline) (an exact float equality); its output_func sees the score
    # difference, which is captured here and compared with ours. Linear logits, Gradient x Input, baseline 0:
    # complete up to the rounding of float sums, so Quantus says False where our gap is ~1e-7.
    model = LinearClassifier(SHAPE, classes=4, seed=2).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, *SHAPE, generator=g)
    y = model(x).argmax(1)
    a = (model.fc.weight[y].reshape(3, *SHAPE) * x).detach()
    seen = []
    metric = quantus.Completeness(perturb_baseline=0.0, normalise=False, output_func=lambda d: seen.append(d) or d,
                                  disable_warnings=True)
    flags = metric(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=a.numpy(), device="cpu",
                   channel_first=True)
    total, diff = completeness_terms(model, x, a, baseline=0.0)
    assert np.allclose(diff.numpy(), seen[0], rtol=1e-5)
    assert np.allclose(total.numpy(), a.reshape(3, -1).double().sum(1).numpy())
    gap = completeness(model, x, a, baseline=0.0)
    assert (gap < 1e-5).all()
    assert not all(flags)  # Quantus's exact-equality verdict fails on float rounding alone


def test_completeness_by_hand():
    # Logit sum(x) on [1, 2, 3] and baseline 0: f(x) - f(0) = 6; attributions summing to 4 -> gap 2 / 6.
    model = LinearScore(torch.ones(1, 1, 3))
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    assert float(completeness(model, x, torch.tensor([[[1.0, 1.0, 2.0]]]), target=0, baseline=0.0)) == \
        pytest.approx(2 / 6)
    # black = the image's minimum (1): f(x) - f(1, 1, 1) = 3
    assert float(completeness(model, x, torch.tensor([[[0.0, 1.0, 2.0]]]), target=0)) == pytest.approx(0.0)


def _case(seed: int):
    # Class 0 looks at the left half only: right-half pixels change nothing (non-sensitive).
    w = torch.zeros(1, 6, 6)
    w[:, :, :3] = torch.rand(1, 6, 3, generator=torch.Generator().manual_seed(seed)) + 0.5
    model = LinearScore(w).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(4, 1, 6, 6, generator=g) + 0.1
    maps = torch.rand(4, 6, 6, generator=g) + 0.01
    maps[:, :, 4:] = 0.0  # two of the three right columns get no attribution
    maps[:, 0, 0] = 1.0  # every map's maximum is 1: Quantus's batch-wide normalisation is each image's own
    return model, x, maps


@pytest.mark.numerics
def test_non_sensitivity_matches_quantus(quantus):
    model, x, maps = _case(0)
    metric = quantus.NonSensitivity(disable_warnings=True)
    theirs = metric(model=model, x_batch=x.numpy(), y_batch=np.zeros(4, int), a_batch=maps[:, None].numpy(),
                    device="cpu", channel_first=True, softmax=False)
    ours = non_sensitivity(model, x, maps, target=0, softmax=False)
    assert ours.tolist() == [float(v) for v in theirs]
    # by hand, with baseline 0 (every pixel is > 0.1, so removing any left pixel changes the score): column 3 is
    # non-sensitive but attributed (6 violations), columns 4-5 are right. With "black" (the image's minimum) the
    # minimum pixel is replaced by itself and looks non-sensitive: one more where it lies on the left.
    assert non_sensitivity(model, x, maps, target=0, softmax=False, baseline=0.0).tolist() == [6.0] * 4
    left_min = (x[:, 0].reshape(4, -1).argmin(1) % 6 < 3).double()
    assert torch.equal(ours, 6 + left_min)


def test_non_sensitivity_steps_and_rows():
    model, x, maps = _case(1)
    counted = Counting(model)
    one = non_sensitivity(counted, x, maps, target=0, softmax=False, batch_size=7, baseline=0.0)
    assert counted.rows == 4 + 4 * 36 and counted.calls == 1 + -(-144 // 7)
    # 3 pixels per step (raster order): each step is half a row, all sensitive (left) or not (right), so every
    # pixel gets the same verdict as alone. 2 per step pairs columns 2 and 3: column 3 counts as sensitive.
    kw = {"target": 0, "softmax": False, "baseline": 0.0}
    assert torch.equal(one, non_sensitivity(model, x, maps, features_in_step=3, **kw))
    assert torch.equal(non_sensitivity(model, x, maps, features_in_step=2, **kw), one - 6)
    with pytest.raises(ValueError, match="features_in_step"):
        non_sensitivity(model, x, maps, features_in_step=0)
