"""The kept bottom graph of cascading randomization stores its saved tensors in large buffers of its own
(``cascade._Slabs``): the copies keep values, shapes and strides, so gradients through the graph are unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.sanity.cascade import _Slabs  # noqa: PLC2701 - the unit under test


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, groups=8),
                         nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_copies_keep_values_and_strides_and_skip_the_model():
    net = _net()
    slabs = _Slabs({p.data_ptr() for p in net.parameters()})
    t = torch.rand(2, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    c = slabs.pack(t)
    assert c.data_ptr() != t.data_ptr() and c.stride() == t.stride() and torch.equal(c, t)
    assert slabs.pack(t) is c  # saved twice: copied once
    w = net[0].weight
    assert slabs.pack(w) is w  # the model's own parameters stay where they are
    v = torch.rand(4, 6)[:, ::2]  # not dense: left as it is
    assert slabs.pack(v) is v
    big = torch.rand(_Slabs.SIZE // 4 + 1)
    assert torch.equal(slabs.pack(big), big)  # larger than a slab: a buffer of its own


@pytest.mark.numerics
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gradient_through_slab_copies_equals_the_plain_graph(layout):
    net = _net()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=layout)
    grads = []
    for hooks in (False, True):
        xi = x.clone().requires_grad_(True)
        slabs = _Slabs({p.data_ptr() for p in net.parameters()})
        with torch.autograd.graph.saved_tensors_hooks(slabs.pack, slabs.unpack) if hooks else torch.enable_grad():
            out = net(xi)
        if hooks:
            assert slabs.seen  # the graph saved tensors through the hook
        (g,) = torch.autograd.grad(out[:, 1].sum(), xi)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1], rtol=0, atol=1e-7)
