"""The generalised capture: tuple / dict members, module inputs, token outputs laid out as a patch grid, and the
CAM family running unchanged on a transformer block."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import interpretorch as it
from interpretorch.capture import Site, capture, patched, token_grid


class Pair(nn.Module):
    """Returns (x * 2, x + 1) and a dict view of the same."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict

    def forward(self, x):
        return {"double": x * 2, "plus": x + 1} if self.as_dict else (x * 2, x + 1)


class TwoHeads(nn.Module):
    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pair = Pair(as_dict)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        out = self.pair(self.conv(x))
        a, b = (out["double"], out["plus"]) if isinstance(out, dict) else out
        return self.head((a * b).mean((2, 3)))


@pytest.mark.parametrize("as_dict", [False, True])
def test_member_of_a_tuple_or_dict_output_and_its_gradient(as_dict, snapshot):
    torch.manual_seed(0)
    model = TwoHeads(as_dict).eval()
    snap = snapshot(model)
    x = torch.rand(2, 3, 6, 6)
    member = "pair:plus" if as_dict else "pair:1"
    with capture(model, [member, "conv", "head:input"]) as rec:
        out = model(x)
        grads = rec.gradients(out[:, 0])
    conv = model.conv(x).detach()
    torch.testing.assert_close(rec[member], conv + 1)
    torch.testing.assert_close(rec["head:input"], (2 * conv * (conv + 1)).mean((2, 3)))
    # d out0 / d (x+1) member = d/db of head(mean(a*b)) = w0 * a / (H*W)
    w0 = model.head.weight[0].detach()
    torch.testing.assert_close(grads[member], w0[None, :, None, None] * 2 * conv / 36)
    snap.assert_unchanged()


def test_callable_selector_input_keyword_and_clear_errors():
    model = TwoHeads().eval()
    x = torch.rand(1, 3, 6, 6)
    with capture(model, Site("pair", select=lambda out: out[0]), grad=False) as rec:
        model(x)
    torch.testing.assert_close(rec["pair:<fn>"], 2 * model.conv(x).detach())
    with pytest.raises(KeyError, match="no member 5"), capture(model, "pair:5", grad=False):
        model(x)
    with pytest.raises(TypeError, match="pick a member"), capture(model, "pair", grad=False):
        model(x)
    with pytest.raises(KeyError, match="no layer 'pairs'"):
        with capture(model, "pairs:0"):
            pass


def test_patched_replaces_one_member():
    model = TwoHeads().eval()
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad(), patched(model, "pair:1", lambda b: torch.zeros_like(b)):
        out = model(x)
    torch.testing.assert_close(out, model.head.bias.detach()[None])
    assert not model.pair._forward_hooks


def test_token_grid_infers_grid_and_drops_prefix_tokens():
    t = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)  # CLS + 4x4 patches
    g = token_grid((32, 32))(t)
    assert g.shape == (2, 3, 4, 4)
    torch.testing.assert_close(g[:, :, 0, 1], t[:, 2])  # patch (0, 1) is token 1 + 1
    assert token_grid((32, 64))(torch.rand(1, 1 + 8, 5)).shape == (1, 5, 2, 4)  # CLS + a 2x4 grid
    assert token_grid((32, 64))(torch.rand(1, 1 + 4 + 8, 5)).shape == (1, 5, 2, 4)  # CLS and 4 register tokens
    assert token_grid((32, 32), prefix_tokens=5)(torch.rand(1, 21, 2)).shape == (1, 2, 4, 4)
    with pytest.raises(ValueError, match="cannot lay 7 tokens"):
        token_grid((32, 32), prefix_tokens=0)(torch.rand(1, 7, 2))


class TinyViT(nn.Module):
    """Patch embedding, a CLS token and two pre-norm encoder blocks (nn.TransformerEncoderLayer)."""

    def __init__(self, dim: int = 16, patch: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.blocks = nn.Sequential(*[nn.TransformerEncoderLayer(dim, 2, 32, dropout=0.0, batch_first=True,
                                                                 norm_first=True) for _ in range(2)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(len(x), -1, -1), t], 1)
        return self.head(self.norm(self.blocks(t))[:, 0])


def test_cams_run_on_a_transformer_block_through_the_token_grid(snapshot):
    torch.manual_seed(0)
    model = TinyViT().eval()
    snap = snapshot(model)
    x = torch.rand(3, 3, 32, 48)
    es = it.explain(model, x, ["gradcam", "layercam", "eigencam"], target=[0, 1, 2], layer="blocks.0")
    for e in es.values():
        assert e.raw.shape == (3, 4, 6) and e.maps.shape == (3, 32, 48)
    # Grad-CAM on the grid equals the rule applied by hand to the reshaped tokens and their gradients.
    with capture(model, "blocks.0", reshape=token_grid((32, 48))) as rec:
        out = model(x)
        g = rec.gradients(out.gather(1, torch.tensor([[0], [1], [2]])).squeeze(1))["blocks.0"]
    a = rec["blocks.0"]
    assert a.shape == (3, 16, 4, 6) and g.shape == a.shape
    ref = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
    torch.testing.assert_close(es["gradcam"].raw, ref)
    one = it.explain(model, x[1:2], "gradcam", target=1, layer="blocks.0")  # batch equals single calls
    torch.testing.assert_close(one.maps[0], es["gradcam"].maps[1], rtol=1e-5, atol=1e-6)
    snap.assert_unchanged()


def test_recorded_activations_survive_a_following_in_place_relu():
    from interpretorch.models import TinyCNN

    model, x = TinyCNN(num_classes=3).eval(), torch.randn(2, 3, 16, 16)
    with capture(model, "features.1", grad=False) as rec:  # BatchNorm, then ReLU(inplace=True)
        model(x)
    with torch.no_grad():
        ref = model.features[1](model.features[0](x))
    assert (rec["features.1"] < 0).any()
    torch.testing.assert_close(rec["features.1"], ref)
