"""FullGrad: the full-gradient completeness on networks of linear pieces, and the saliency map by hand."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch import explain
from interpretorch.attribution.fullgrad import bias_layers, implicit_bias


def _net(relu: bool) -> nn.Module:
    torch.manual_seed(0)
    act = [nn.ReLU()] if relu else []
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), *act, nn.Conv2d(4, 5, 3, stride=2),
                        nn.BatchNorm2d(5), *act, nn.Flatten(), nn.Linear(5 * 7 * 7, 6))
    for m in net.modules():  # running statistics away from the identity, so the folded biases matter
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


@pytest.mark.parametrize("relu", [False, True])
def test_completeness_on_linear_plus_bias_networks(relu, snapshot):
    net = _net(relu)
    snap = snapshot(net)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    e = explain(net, x, "fullgrad", target=[0, 3, 5])
    assert torch.allclose(e.extras["completeness"], e.scores.double(), rtol=1e-4, atol=1e-4)
    assert float(e.extras["completeness_gap"].abs().max()) < 1e-4
    assert e.extras["bias_layers"] == 4  # two convolutions and two batch norms give spatial terms
    snap.assert_unchanged()


def test_folded_batchnorm_bias():
    bn = nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    bn.weight.data.copy_(torch.tensor([2.0, 1.0, -1.0]))
    bn.bias.data.copy_(torch.tensor([0.1, 0.2, 0.3]))
    b = implicit_bias(bn)
    ref = bn(torch.zeros(1, 3, 1, 1)).flatten()  # an affine map's bias is its value at zero
    assert torch.allclose(b, ref, atol=1e-6)
    assert bias_layers(_net(False)) == ["0", "1", "2", "3", "5"]
    assert implicit_bias(nn.Conv2d(1, 1, 1, bias=False)) is None


def test_saliency_by_hand():
    """psi(|grad x input|) per channel plus psi(|bias x bias-gradient|) per channel of each spatial layer."""
    net = _net(True)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    e = explain(net, x, "fullgrad", target=2)
    xi = x.clone().requires_grad_(True)
    h1 = net[1](net[0](xi))
    h2 = net[4](net[3](net[2](h1)))
    out = net[7](net[6](net[5](h2)))
    gx, g1, g2 = torch.autograd.grad(out[0, 2], [xi, h1, h2])

    def psi(t):
        t = t.abs()
        t = t - t.amin(dim=(2, 3), keepdim=True)
        t = t / (t.amax(dim=(2, 3), keepdim=True) + 1e-7)
        return F.interpolate(t, size=(16, 16), mode="bilinear", align_corners=False).sum(1)

    c0, c1 = net[0].bias.view(1, -1, 1, 1), implicit_bias(net[1]).view(1, -1, 1, 1)
    c3, c4 = net[3].bias.view(1, -1, 1, 1), implicit_bias(net[4]).view(1, -1, 1, 1)
    ref = psi(gx * x) + psi(c0 * _grad_at(net, x, 0, 2)) + psi(c1 * g1) \
        + psi(c3 * _grad_at(net, x, 3, 2)) + psi(c4 * g2)
    assert torch.allclose(e.maps, ref.detach(), atol=1e-5)
    with pytest.raises(ValueError, match="scope"):
        explain(net, x, "fullgrad", options={"fullgrad": {"scope": "pixel"}})


def _grad_at(net, x, i, cls):
    """Gradient of output ``cls`` at the output of layer ``i`` of the Sequential."""
    h = x
    for k, m in enumerate(net):
        h = m(h)
        if k == i:
            h = h.detach().requires_grad_(True)
            site = h
    return torch.autograd.grad(h[0, cls], site)[0]
