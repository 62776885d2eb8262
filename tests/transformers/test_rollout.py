"""Rollout and gradient-weighted rollout against direct hand computations."""
from __future__ import annotations

import pytest
import torch

from interpretorch.transformers.rollout import (discard_lowest, fuse_heads, gradient_rollout_matrix, readout,
                                                rollout_matrix)


def _attn(b=2, layers=2, heads=3, t=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, layers, heads, t, t, generator=g, dtype=torch.float64).softmax(-1)


def test_rollout_matches_hand_computation_on_two_layers():
    a = _attn(b=1)
    # by hand, entry by entry: A_l = 0.5 mean_h(attn) + 0.5 I, rows renormalised, R = A_2 A_1
    mats = []
    for layer in range(2):
        m = [[0.0] * 4 for _ in range(4)]
        for i in range(4):
            for j in range(4):
                m[i][j] = 0.5 * sum(float(a[0, layer, h, i, j]) for h in range(3)) / 3 + (0.5 if i == j else 0.0)
            s = sum(m[i])
            m[i] = [v / s for v in m[i]]
        mats.append(m)
    expect = [[sum(mats[1][i][k] * mats[0][k][j] for k in range(4)) for j in range(4)] for i in range(4)]
    got = rollout_matrix(a)[0]
    assert torch.allclose(got, torch.tensor(expect, dtype=torch.float64), atol=1e-12)
    # start_layer=1 keeps only the second layer
    assert torch.allclose(rollout_matrix(a, start_layer=1)[0], torch.tensor(mats[1], dtype=torch.float64))


@pytest.mark.numerics
@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5])
def test_rows_sum_to_one_and_batch_equals_single(fusion, discard):
    a = _attn(b=3, layers=3, t=6)
    r = rollout_matrix(a, head_fusion=fusion, discard_ratio=discard)
    assert torch.allclose(r.sum(-1), torch.ones(3, 6, dtype=torch.float64), atol=1e-12)
    single = torch.cat([rollout_matrix(a[i:i + 1], head_fusion=fusion, discard_ratio=discard) for i in range(3)])
    torch.testing.assert_close(r, single, rtol=1e-12, atol=1e-14)  # float64 products; batched matmul may round


def test_head_fusions():
    a = _attn()
    assert torch.equal(fuse_heads(a, "max"), a.amax(2))
    assert torch.equal(fuse_heads(a, "min"), a.amin(2))
    with pytest.raises(ValueError, match="head fusion"):
        fuse_heads(a, "median")


def test_discard_never_touches_the_class_token():
    fused = _attn(b=2, layers=1, heads=1, t=5)[:, 0, 0]
    fused[:, 0, :] = 1e-6  # tiny class-token weights would be discarded first if they were candidates
    fused[:, :, 0] = 1e-6
    out = discard_lowest(fused, 0.5)
    assert torch.equal(out[:, 0], fused[:, 0]) and torch.equal(out[:, :, 0], fused[:, :, 0])
    inner = out[:, 1:, 1:].reshape(2, -1)
    assert ((inner == 0).sum(1) == 8).all()  # half of the 16 candidates
    # the discarded ones are the smallest
    for i in range(2):
        orig = fused[i, 1:, 1:].reshape(-1)
        assert orig[inner[i] == 0].max() <= orig[inner[i] != 0].min()
    with pytest.raises(ValueError, match="discard_ratio"):
        discard_lowest(fused, 1.0)


def test_gradient_rollout_matches_hand_computation():
    a = _attn(b=2)
    g = torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = torch.eye(4, dtype=torch.float64).expand(2, 4, 4).clone()
    for layer in range(2):
        a_bar = torch.zeros(2, 4, 4, dtype=torch.float64)
        for h in range(3):
            a_bar += torch.clamp(g[:, layer, h] * a[:, layer, h], min=0) / 3
        r = r + a_bar @ r
    assert torch.allclose(gradient_rollout_matrix(a, g), r, atol=1e-12)
    assert torch.allclose(gradient_rollout_matrix(a, g, start_layer=1),
                          torch.eye(4, dtype=torch.float64) + (g[:, 1] * a[:, 1]).clamp_min(0).mean(1), atol=1e-12)
    single = torch.cat([gradient_rollout_matrix(a[i:i + 1], g[i:i + 1]) for i in range(2)])
    assert torch.allclose(gradient_rollout_matrix(a, g), single, atol=1e-12)


def test_readouts_and_bad_input():
    m = torch.arange(2 * 3 * 3, dtype=torch.float64).reshape(2, 3, 3)
    assert torch.equal(readout(m, "cls"), m[:, 0])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    assert torch.allclose(readout(m, "mean", valid)[0], m[0, :2].mean(0))
    with pytest.raises(ValueError, match="layers, heads"):
        rollout_matrix(torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="start_layer"):
        rollout_matrix(_attn(), start_layer=5)
