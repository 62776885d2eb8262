"""The one-pass CAM family: against Captum, hand-computed weighting rules, batching and the model contract."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch import explain
from interpretorch.attribution.cam import CAM_METHODS, layer_cams


def test_gradcam_equals_captum_layergradcam(tiny, images):
    from captum.attr import LayerAttribution, LayerGradCam

    target = [0, 1, 2, 3]
    ours = layer_cams(tiny, images, "gradcam", target, "features.8")["gradcam"]
    lgc = LayerGradCam(tiny, tiny.features[8])
    ref = lgc.attribute(images, target=target, relu_attributions=True)
    ref_up = LayerAttribution.interpolate(ref, images.shape[-2:], interpolate_mode="bilinear")[:, 0].detach()
    ref = ref.detach()
    assert torch.allclose(ours.raw, ref[:, 0], rtol=1e-5, atol=1e-7 * float(ref.abs().max()))
    assert torch.allclose(ours.maps, ref_up, rtol=1e-5, atol=1e-7 * float(ref_up.abs().max()))
    assert ours.maps.max() > 0


class Toy(nn.Module):
    """score_k = sum(W_k * A) with A = the input itself: the gradient at layer 'feat' is exactly W_k."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.register_buffer("w", w)  # (K, C, H, W)

    def forward(self, x):
        a = self.feat(x)
        return torch.einsum("kchw,bchw->bk", self.w, a)


A = torch.tensor([[[[1.0, 2.0], [0.0, 3.0]],
                   [[4.0, 3.0], [1.0, 1.0]]]])  # (1, C=2, 2, 2)
W = torch.tensor([[[[0.5, -1.0], [2.0, 0.0]],
                   [[1.0, 1.0], [-0.5, 0.5]]]])  # (K=1, C=2, 2, 2)


def _hand(method: str) -> list[list[float]]:
    """Each rule computed with plain Python arithmetic, pixel by pixel."""
    a, g = A[0].tolist(), W[0].tolist()
    C, H, Wd = 2, 2, 2
    cells = [(i, j) for i in range(H) for j in range(Wd)]
    if method in ("gradcam", "xgradcam", "gradcam++"):
        w = []
        for c in range(C):
            if method == "gradcam":
                w.append(sum(g[c][i][j] for i, j in cells) / 4)
            elif method == "xgradcam":
                s = sum(a[c][i][j] for i, j in cells)
                w.append(sum(g[c][i][j] * a[c][i][j] / s for i, j in cells))
            else:
                s = sum(a[c][i][j] for i, j in cells)
                tot = 0.0
                for i, j in cells:
                    gij = g[c][i][j]
                    if gij == 0:
                        continue
                    alpha = gij ** 2 / (2 * gij ** 2 + s * gij ** 3)
                    tot += alpha * max(gij, 0.0)
                w.append(tot)
        m = [[sum(w[c] * a[c][i][j] for c in range(C)) for j in range(Wd)] for i in range(H)]
    elif method == "layercam":
        m = [[sum(max(g[c][i][j], 0) * a[c][i][j] for c in range(C)) for j in range(Wd)] for i in range(H)]
    elif method == "hirescam":
        m = [[sum(g[c][i][j] * a[c][i][j] for c in range(C)) for j in range(Wd)] for i in range(H)]
    return [[max(v, 0.0) for v in row] for row in m]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"])
def test_weighting_rule_by_hand(method):
    model = Toy(W)
    e = layer_cams(model, A, method, 0, "feat")[method]
    expected = torch.tensor(_hand(method))
    assert torch.allclose(e.raw[0], expected, atol=1e-6), (e.raw[0], expected)


def test_hand_values_are_distinct():
    # Guards the hand-computed test against rules that coincide on the toy case.
    maps = [tuple(sum(_hand(m), [])) for m in ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]]
    assert len(set(maps)) == 5


def test_cam_is_gradcam_times_area_for_gap_linear(tiny, images):
    r = layer_cams(tiny, images, ["cam", "gradcam"], "top1", "features", relu=False)
    hw = r["cam"].raw.shape[-1] * r["cam"].raw.shape[-2]
    assert torch.allclose(r["cam"].raw, r["gradcam"].raw * hw, atol=1e-5)
    # CAM with the fc bias spread over the map sums to the logit (Zhou et al. 2016 eq. 2).
    with torch.no_grad():
        logits = tiny(images)
    idx = r["cam"].target
    total = r["cam"].raw.sum((1, 2)) / hw + tiny.fc.bias[idx]
    assert torch.allclose(total, logits.gather(1, idx[:, None])[:, 0], atol=1e-5)


def test_eigencam_is_first_principal_component(tiny, images):
    e = layer_cams(tiny, images, "eigencam", 0, "features.8", relu=False)["eigencam"]
    with torch.no_grad():
        acts = tiny.features[:9](images)
    for b in range(len(images)):
        x = acts[b].reshape(acts.shape[1], -1).T.double()
        x = x - x.mean(0)
        u, s, v = torch.linalg.svd(x, full_matrices=False)
        pc = (x @ v[0]).reshape(acts.shape[2:])
        got = e.raw[b].double()
        cos = float((pc * got).sum() / (pc.norm() * got.norm()))
        assert abs(abs(cos) - 1) < 1e-5
        # Sign convention: positively correlated with the channel-summed activation.
        ref = acts[b].sum(0).double()
        assert float(((got - got.mean()) * (ref - ref.mean())).sum()) >= 0


@pytest.mark.numerics
def test_batch_equals_single_images(tiny, images):
    all_at_once = layer_cams(tiny, images, list(CAM_METHODS), [4, 3, 2, 1], "features", batch_size=3)
    for i in range(4):
        single = layer_cams(tiny, images[i:i + 1], list(CAM_METHODS), [4 - i], "features")
        for m in CAM_METHODS:
            assert torch.allclose(all_at_once[m].maps[i], single[m].maps[0], atol=1e-5, rtol=1e-4), m


def test_one_pass_for_all_gradient_cams(tiny, images):
    calls = {"fwd": 0}
    h = tiny.register_forward_hook(lambda *a: calls.__setitem__("fwd", calls["fwd"] + 1))
    try:
        explain(tiny, images, ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"],
                layer="features.8")
    finally:
        h.remove()
    assert calls["fwd"] == 1


def test_targets_int_list_callable_agree(tiny, images):
    by_int = explain(tiny, images, "gradcam", 2, layer="features")
    by_list = explain(tiny, images, "gradcam", [2, 2, 2, 2], layer="features")
    by_fn = explain(tiny, images, "gradcam", lambda out: out[:, 2], layer="features")
    assert torch.equal(by_int.target, torch.tensor([2, 2, 2, 2]))
    assert torch.allclose(by_int.maps, by_list.maps) and torch.allclose(by_int.maps, by_fn.maps)
    top = explain(tiny, images, "gradcam", layer="features")
    with torch.no_grad():
        assert torch.equal(top.target, tiny(images).argmax(1))


@pytest.mark.parametrize("method", list(CAM_METHODS) + ["scorecam", "ablationcam"])
def test_model_unchanged_after_each_method(tiny, images, snapshot, method):
    tiny.train()  # the contract restores train mode too
    snap = snapshot(tiny)
    e = explain(tiny, images, method, layer="features", batch_size=2)
    assert e.maps.shape == (4, 32, 32) and torch.isfinite(e.maps).all()
    snap.assert_unchanged()


def test_model_unchanged_after_a_method_raised(tiny, images, snapshot):
    snap = snapshot(tiny)

    def bad_target(out):
        raise RuntimeError("target exploded")

    with pytest.raises(RuntimeError, match="target exploded"):
        explain(tiny, images, ["gradcam", "layercam"], bad_target, layer="features.8")
    snap.assert_unchanged()


def test_clear_errors(tiny, images):
    with pytest.raises(KeyError, match="features"):
        explain(tiny, images, "gradcam", layer="featurs")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        explain(tiny, images[0], "gradcam")
    with pytest.raises(ValueError, match="did you mean gradcam"):
        explain(tiny, images, "gradcm")
    with pytest.raises(ValueError, match="out of range"):
        explain(tiny, images, "gradcam", 7)
    with pytest.raises(ValueError, match="4 images"):
        explain(tiny, images, "gradcam", [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        explain(tiny, images * float("nan"), "gradcam")

    class NaNOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3)) * float("nan")

    with pytest.raises(FloatingPointError, match="NaN"):
        explain(NaNOut(), images, "gradcam")


@pytest.mark.numerics
def test_pretrained_gradcam_points_at_the_object(pretrained, sample_batch):
    e = explain(pretrained.model, sample_batch[[1, 3]], "gradcam", normalize=True)
    cup, rocket = e.maps
    # The espresso cup fills the upper centre of the crop; the lower corners are saucer and table.
    assert cup[20:140, 50:175].mean() > 2.5 * torch.cat([cup[180:, :40], cup[180:, -40:]]).mean()
    # The rocket is the vertical column in the middle; the outer strips are sky and gantry.
    assert rocket[:, 90:135].mean() > 3 * torch.cat([rocket[:, :40], rocket[:, -40:]], 1).mean()
    assert math.isclose(float(e.maps.amax((1, 2)).min()), 1.0, abs_tol=1e-6)
