"""AttnLRP rules against their formulas, and relevance bookkeeping through whole transformer blocks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from interpretorch.models.vit import TinyViT
from interpretorch.transformers.lrp import attnlrp_rules
from interpretorch.transformers.vision import attnlrp


def _relevance_through(fn, *inputs, seed=0):
    """Relevance (x * modified grad) of each input when the output's relevance is out * c."""
    xs = [x.clone().requires_grad_(True) for x in inputs]
    with attnlrp_rules():
        out = fn(*xs)
    c = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * c).sum().backward()
    return out.detach() * c, [x.detach() * x.grad for x in xs]


def test_gelu_identity_rule():
    x = torch.randn(4, 7, dtype=torch.float64)
    x[0, 0] = 0.0
    r_out, (r_in,) = _relevance_through(F.gelu, x)
    assert torch.allclose(r_in, r_out, atol=1e-12)  # R_x = R_y element-wise
    for fn in (lambda t: F.gelu(t, approximate="tanh"), torch.tanh, F.silu):
        r_out, (r_in,) = _relevance_through(fn, x)
        assert torch.allclose(r_in, r_out, atol=1e-12)


def test_layer_norm_treats_the_std_as_constant():
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)
    r_out, (r_in,) = _relevance_through(lambda t: F.layer_norm(t, (8,), w, None, 1e-5), x)
    assert torch.allclose(r_in.sum(-1), r_out.sum(-1), atol=1e-10)  # linear map without bias: conserved
    # the gradient is that of (x - mean) / const_std * w
    xx = x.clone().requires_grad_(True)
    std = (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    c = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    (((xx - xx.mean(-1, keepdim=True)) / std * w) * c).sum().backward()
    assert torch.allclose(r_in, x * xx.grad, atol=1e-12)


def test_matmul_uniform_rule_and_softmax_rule():
    a, b = torch.randn(2, 3, 4, dtype=torch.float64), torch.randn(2, 4, 5, dtype=torch.float64)
    r_out, (ra, rb) = _relevance_through(torch.matmul, a, b)
    assert torch.allclose(ra.sum(), 0.5 * r_out.sum()) and torch.allclose(rb.sum(), 0.5 * r_out.sum())
    # softmax: R_x = x * (R_s - s * sum(R_s)) (AttnLRP, Proposition 3.1 form)
    x = torch.randn(3, 6, dtype=torch.float64)
    r_s, (r_x,) = _relevance_through(lambda t: t.softmax(-1), x)
    s = x.softmax(-1)
    assert torch.allclose(r_x, x * (r_s - s * r_s.sum(-1, keepdim=True)), atol=1e-12)


def test_fused_attention_equals_the_written_out_rules():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([True] * 4 + [False])

    def written(q, k, v):
        logits = torch.matmul(q, k.transpose(-1, -2)) * 0.5
        p = logits.masked_fill(~mask, float("-inf")).softmax(-1)
        return torch.matmul(p, v)
    r1, rel1 = _relevance_through(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), q, k, v)
    r2, rel2 = _relevance_through(written, q, k, v)
    assert torch.allclose(r1, r2, atol=1e-12)
    for a, b in zip(rel1, rel2):
        assert torch.allclose(a, b, atol=1e-10)
    assert (rel1[1][..., 4, :] == 0).all() and (rel1[2][..., 4, :] == 0).all()  # the masked key gets nothing


def _block_relevances(model, x, **rules):
    t0 = model.tokens(x).detach().requires_grad_(True)
    states = [t0]
    with attnlrp_rules(record=True, **rules) as st:
        t = t0
        for blk in model.blocks:
            t = blk(t)
            t.retain_grad()
            states.append(t)
        out = model.head(model.norm(t)[:, 0])
    out[:, 0].sum().backward()
    return out[:, 0].detach(), [(u * u.grad).flatten(1).sum(1) for u in states], st


@pytest.fixture
def bias_free_vit():
    torch.manual_seed(0)
    m = TinyViT(image_size=32, patch=8, dim=32, depth=3, num_heads=4, stem=0, bias=False).eval()
    for p in m.parameters():
        if p.dim() >= 2:
            torch.nn.init.normal_(p, std=0.15)
        p.requires_grad_(False)
    return m


def test_conservation_layer_by_layer(bias_free_vit):
    """Without biases every rule conserves relevance except AttnLRP's softmax, whose bias term absorbs exactly
    (relevance at the probabilities - relevance at the logits); with CP-LRP (no relevance through the softmax)
    relevance is conserved through each block."""
    x = torch.randn(3, 3, 32, 32)
    score, r, st = _block_relevances(bias_free_vit, x)
    leak = st.softmax_leak()
    assert len(leak) == 3
    assert torch.allclose(r[-1], score, rtol=1e-4)  # final LayerNorm (no bias) and head
    for i in range(3):
        assert torch.allclose(r[i], r[i + 1] - leak[i], rtol=1e-3, atol=1e-5), f"block {i}"
    score, r, _ = _block_relevances(bias_free_vit, x, conservative=True)
    for i in range(3):
        assert ((r[i] - score).abs() <= 0.01 * score.abs()).all(), f"block {i}"


def test_attnlrp_method_on_vit(vit, snapshot):
    x = torch.randn(2, 3, 32, 32)
    x0 = x.clone()
    snap = snapshot(vit)
    e = attnlrp(vit, x, target=[1, 2])
    assert e.maps.shape == (2, 32, 32) and e.raw.shape == (2, 3, 32, 32)
    assert e.target.tolist() == [1, 2]
    # one forward and one modified backward: equals the per-image calls
    e1 = attnlrp(vit, x[1:], target=2)
    assert torch.allclose(e.raw[1:], e1.raw, atol=1e-6)
    snap.assert_unchanged()
    assert torch.equal(x, x0)
    with pytest.raises(ValueError, match="targets for 2 images"):
        attnlrp(vit, x, target=[1, 2, 3])
