"""Attention capture from fused attention equals the explicit softmax(QK^T/sqrt(d) + mask)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from interpretorch.transformers.attention import attention_maps, attention_modules, capture_attention


def _manual_vit(m, x):
    """The tiny ViT written out with explicit attention probabilities."""
    t = m.tokens(x)
    probs = []
    for blk in m.blocks:
        a, h = blk.attn, blk.norm1(t)
        b, n, c = h.shape
        q, k, v = a.qkv(h).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        p = (q @ k.transpose(-1, -2) * a.scale).softmax(-1)
        probs.append(p)
        t = t + a.proj((p @ v).transpose(1, 2).reshape(b, n, c))
        t = t + blk.mlp(blk.norm2(t))
    return m.head(m.norm(t)[:, 0]), torch.stack(probs, 1)


def test_vit_fused_equals_unfused(vit, snapshot):
    x = torch.randn(3, 3, 32, 32)
    x0 = x.clone()
    snap = snapshot(vit)
    assert attention_modules(vit) == ["blocks.0.attn", "blocks.1.attn"]
    got = attention_maps(vit, x, batch_size=2)
    with torch.no_grad():
        out, expect = _manual_vit(vit, x)
    assert got.shape == (3, 2, 4, 17, 17)
    assert (got - expect).abs().max() < 1e-6
    # with grad=True the outputs keep the fused values and the probabilities receive gradients
    with capture_attention(vit, grad=True) as rec:
        y = vit(x)
        g = rec.gradients(y[:, 1])
    assert torch.equal(y.detach(), vit(x).detach()) and (y.detach() - out).abs().max() < 1e-5
    assert g.shape == expect.shape and g.abs().sum() > 0
    snap.assert_unchanged()
    assert torch.equal(x, x0)


def test_vit_gradients_wrt_probabilities_match_explicit_model(vit):
    x = torch.randn(2, 3, 32, 32)
    with capture_attention(vit, grad=True) as rec:
        g = rec.gradients(vit(x)[:, 0])
    # explicit model: perturb the probabilities of layer 1 through a hook-free rewrite
    t = vit.tokens(x).detach()
    blk0, blk1 = vit.blocks
    with torch.no_grad():
        _, probs = _manual_vit(vit, x)
    p1 = probs[:, 1].clone().requires_grad_(True)
    a, h = blk0.attn, blk0.norm1(t)
    b, n, c = h.shape
    q, k, v = a.qkv(h).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
    t = t + a.proj(((q @ k.transpose(-1, -2) * a.scale).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))
    t = t + blk0.mlp(blk0.norm2(t))
    a, h = blk1.attn, blk1.norm1(t)
    v = a.qkv(h).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)[2]
    t = t + a.proj((p1 @ v).transpose(1, 2).reshape(b, n, c))
    t = t + blk1.mlp(blk1.norm2(t))
    (g1,) = torch.autograd.grad(vit.head(vit.norm(t)[:, 0])[:, 0].sum(), p1)
    assert torch.allclose(g[:, 1], g1, atol=1e-6)
    for p in vit.parameters():
        p.grad = None


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_padding(batch_first, snapshot):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    snap = snapshot(mha)
    x = torch.randn(3, 5, 16)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    xin = x if batch_first else x.transpose(0, 1)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, z, key_padding_mask):
            return self.mha(z, z, z, key_padding_mask=key_padding_mask, need_weights=False)[0]

    wrap = Wrap().eval()
    with capture_attention(wrap) as rec, torch.no_grad():
        wrap(xin, pad)
    with torch.no_grad():
        _, expect = mha(xin, xin, xin, key_padding_mask=pad, need_weights=True, average_attn_weights=False)
    assert (rec["mha"] - expect).abs().max() < 1e-6
    assert (rec["mha"][1, :, :, 3:] == 0).all()
    with capture_attention(wrap, grad=True):
        y = wrap(xin, pad)
    with torch.no_grad():  # (MHA's no-grad fast path rounds differently from its autograd path)
        assert (y.detach() - wrap(xin, pad)).abs().max() < 1e-6
    snap.assert_unchanged()


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_bert_with_padding_mask(bert_pair, bert_batch, impl, snapshot):
    eager, sdpa = bert_pair
    model = sdpa if impl == "sdpa" else eager
    ids, mask = bert_batch
    with torch.no_grad():  # on a copy: transformers leaves its own output-capturing hooks installed
        ref = copy.deepcopy(eager)(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    snap = snapshot(model)
    assert ref is not None and len(ref) == 2
    got = attention_maps(model, ids, attention_mask=mask, batch_size=1)
    assert got.shape == (2, 2, 4, 6, 6)
    assert (got - torch.stack(ref, 1)).abs().max() < 1e-6
    assert (got[1, :, :, :, 4:] == 0).all()  # padded keys get no attention
    snap.assert_unchanged()


def test_unsupported_module_is_named():
    with pytest.raises(ValueError, match="no attention module"):
        with capture_attention(nn.Linear(3, 3)):
            pass
    m = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="not a supported attention"):
        with capture_attention(m, ["0"]):
            pass
