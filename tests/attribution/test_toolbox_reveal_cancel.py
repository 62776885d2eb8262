"""DeepLIFT's RevealCancel rule (Shrikumar et al. 2017, section 3.5.3): the paper's min(i1, i2) network by hand,
a from-scratch implementation of the paper's formulas on a small MLP, summation-to-delta on CNNs, and the refusals.
Captum has no RevealCancel, so the references are written here."""
import copy

import pytest
import torch
from torch import nn

from interpretorch.attribution import explain
from interpretorch.attribution.deeplift import deeplift, deeplift_shap
from interpretorch.models import TinyCNN


def min_network() -> nn.Module:
    """o = min(i1, i2) = ReLU(i1) - ReLU(-i1) - ReLU(i1 - i2), a ReLU network of two linear layers on (B, 2, 1, 1)
    inputs."""
    m = nn.Sequential(nn.Flatten(1), nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)).double()
    with torch.no_grad():
        m[1].weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, -1.0]]))
        m[1].bias.zero_()
        m[3].weight.copy_(torch.tensor([[1.0, -1.0, -1.0]]))
        m[3].bias.zero_()
    return m


def test_reveal_cancel_splits_min_between_both_inputs_where_rescale_gives_it_to_one():
    # The paper's figure 3: with reference (0, 0), min(i1, i2) gets 0.5 min(i1, i2) on each input under
    # RevealCancel. By hand for (3, 1): the unit ReLU(i1 - i2) sees dz+ = 3 (from i1), dz- = -1 (from i2),
    # dy+ = (ReLU(3) + ReLU(2) - ReLU(-1)) / 2 = 2.5, dy- = (ReLU(-1) + ReLU(2) - ReLU(3)) / 2 = -0.5; i1 gets
    # 3 - 2.5 = 0.5 and i2 gets -(-0.5 / -1) x (-1) = 0.5. The rescale rule gives everything to the smaller one.
    m = min_network()
    v = torch.tensor([[3.0, 1.0], [1.0, 3.0], [2.0, 2.0], [4.0, 0.5]], dtype=torch.float64)
    x = v[:, :, None, None]
    torch.testing.assert_close(m(x).squeeze(1), v.min(1).values)
    rc = deeplift(m, x, 0, rule="reveal_cancel", baseline=0.0)
    half = 0.5 * v.min(1, keepdim=True).values
    torch.testing.assert_close(rc.maps.flatten(1), half.expand(-1, 2), rtol=0, atol=1e-12)
    rs = deeplift(m, x, 0, rule="rescale", baseline=0.0)
    torch.testing.assert_close(rs.maps.flatten(1), torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 0.5]],
                                                     dtype=torch.float64), rtol=0, atol=1e-12)
    assert rc.extras["rule"] == "reveal_cancel" and rc.extras["forward_backward_passes"] == 4 * 4


def reveal_cancel_by_hand(layers: list[nn.Linear], x: torch.Tensor, x0: torch.Tensor, t: int) -> torch.Tensor:
    """The paper's formulas for Linear-ReLU-...-Linear, one input vector at a time, in plain loops: linear rule
    split by the sign of w_ij dx_j, RevealCancel at each ReLU, multipliers by the chain rule."""
    relu = lambda v: max(v, 0.0)  # noqa: E731
    acts, refs, ups, downs, m_up, m_down = [x.tolist()], [x0.tolist()], [], [], [], []
    for li, lin in enumerate(layers):
        w, b = lin.weight.tolist(), lin.bias.tolist()
        a, r = acts[-1], refs[-1]
        d = [a[j] - r[j] for j in range(len(a))]
        z = [sum(w[i][j] * a[j] for j in range(len(a))) + b[i] for i in range(len(w))]
        z0 = [sum(w[i][j] * r[j] for j in range(len(r))) + b[i] for i in range(len(w))]
        up = [sum(max(w[i][j] * d[j], 0.0) for j in range(len(d))) for i in range(len(w))]
        down = [sum(min(w[i][j] * d[j], 0.0) for j in range(len(d))) for i in range(len(w))]
        ups.append(up)
        downs.append(down)
        if li == len(layers) - 1:
            break
        mu, md = [], []
        for i in range(len(w)):
            p, q, r0 = up[i], down[i], z0[i]
            dy_p = 0.5 * (relu(r0 + p) - relu(r0)) + 0.5 * (relu(r0 + p + q) - relu(r0 + q))
            dy_n = 0.5 * (relu(r0 + q) - relu(r0)) + 0.5 * (relu(r0 + p + q) - relu(r0 + p))
            mu.append(dy_p / p if p != 0 else 0.0)
            md.append(dy_n / q if q != 0 else 0.0)
        m_up.append(mu)
        m_down.append(md)
        acts.append([relu(v) for v in z])
        refs.append([relu(v) for v in z0])
    # backward: multipliers of the last linear layer's output (class t) are 1 for both parts
    g_up = [1.0 if i == t else 0.0 for i in range(layers[-1].out_features)]
    g_down = list(g_up)
    for li in range(len(layers) - 1, -1, -1):
        w = layers[li].weight.tolist()
        a, r = acts[li], refs[li]
        d = [a[j] - r[j] for j in range(len(a))]
        m_in = []
        for j in range(len(a)):
            total = 0.0
            for i in range(len(w)):
                c = w[i][j] * d[j]
                pick = g_up[i] if c > 0 else g_down[i] if c < 0 else 0.5 * (g_up[i] + g_down[i])
                total += w[i][j] * pick
            m_in.append(total)
        if li == 0:
            return torch.tensor([d[j] * m_in[j] for j in range(len(d))], dtype=torch.float64)
        # through the ReLU of layer li - 1: the output's multiplier times dy+/dz+ and dy-/dz-
        g_up = [m_in[i] * m_up[li - 1][i] for i in range(len(m_in))]
        g_down = [m_in[i] * m_down[li - 1][i] for i in range(len(m_in))]
    raise AssertionError("unreachable")


@pytest.mark.numerics
def test_reveal_cancel_equals_the_papers_formulas_on_an_mlp(snapshot):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(1), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.ReLU(),
                      nn.Linear(4, 3)).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, 1, 1, dtype=torch.float64, generator=g)
    base = torch.randn(1, 5, 1, 1, dtype=torch.float64, generator=g) * 0.5
    snap = snapshot(m)
    ours = deeplift(m, x, [0, 2, 1, 2], rule="reveal_cancel", baseline=base, batch_size=4)  # one pair per call
    snap.assert_unchanged()
    layers = [m[1], m[3], m[5]]
    ref = torch.stack([reveal_cancel_by_hand(layers, x[i].flatten(), base[0].flatten(), t)
                       for i, t in enumerate([0, 2, 1, 2])])
    torch.testing.assert_close(ours.maps.flatten(1), ref, rtol=0, atol=1e-10)
    # differs from rescale on this model (else the comparison would not test the rule)
    assert (deeplift(m, x, [0, 2, 1, 2], baseline=base).maps - ours.maps).abs().max() > 1e-3
    with torch.no_grad():
        want = m(x)[range(4), [0, 2, 1, 2]] - m(base)[0, [0, 2, 1, 2]]
    torch.testing.assert_close(ours.maps.flatten(1).sum(1), want, rtol=0, atol=1e-10)


@pytest.mark.numerics
def test_reveal_cancel_sums_to_delta_on_cnns_and_batchnorm_splits_like_its_merged_conv():
    g = torch.Generator().manual_seed(0)
    model = TinyCNN().double().eval()  # conv, eval BatchNorm, in-place ReLU, max pooling, average pooling
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g)
    base = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g) * 0.3
    e = deeplift(model, x, "top1", rule="reveal_cancel", baseline=base, batch_size=8)
    assert e.extras["rescaled_operations"] == 5
    assert e.extras["delta"].abs().max() < 1e-10
    again = deeplift(model, x, "top1", rule="reveal_cancel", baseline=base, batch_size=64)
    torch.testing.assert_close(again.maps, e.maps, rtol=0, atol=1e-12)
    merged = copy.deepcopy(model)
    for i in (0, 4, 8):
        conv, bn = merged.features[i], merged.features[i + 1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            conv.weight.mul_(scale[:, None, None, None])
            conv.bias.copy_((conv.bias - bn.running_mean) * scale + bn.bias)
        merged.features[i + 1] = nn.Identity()
    fused = deeplift(merged, x, e.target, rule="reveal_cancel", baseline=base)
    torch.testing.assert_close(fused.maps, e.maps, rtol=0, atol=1e-10)
    # residual sums, subtraction, negative scaling and a bias added by hand keep the parts consistent
    shap = deeplift_shap(Residual().double().eval(), x, 1, rule="reveal_cancel",
                         baselines=torch.zeros(2, 3, 16, 16, dtype=torch.float64))
    assert shap.extras["delta"].abs().max() < 1e-10 and shap.maps.abs().max() > 0


class Residual(nn.Module):
    """conv -> ReLU with a residual sum, a subtraction, a negative scale and a hand-added bias."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.bias = nn.Parameter(torch.randn(3, 1, 1))
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        h = torch.relu(self.a(x)) + x
        h = torch.relu(-0.5 * self.b(h) - h + self.bias)
        return self.fc(h.mean((2, 3)))


class Square(nn.Module):
    def forward(self, x):
        return torch.relu(x * x).flatten(1)[:, :3]


def test_reveal_cancel_refuses_what_it_cannot_split():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match="parts of the differences no longer add up"):
        deeplift(Square(), x, 0, rule="reveal_cancel", baseline=0.5)
    with pytest.raises(ValueError, match="callable target"):
        deeplift(TinyCNN().eval(), torch.randn(2, 3, 16, 16), lambda out: out[:, 0], rule="reveal_cancel")
    with pytest.raises(ValueError, match="rule must be 'rescale' or 'reveal_cancel'"):
        explain(TinyCNN().eval(), torch.randn(2, 3, 16, 16), "deeplift", options={"deeplift": {"rule": "revealcancel"}})
