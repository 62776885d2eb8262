"""Issue 18's CAMs in the main environment: hand-computed rules, properties from the papers, direct unbatched
computations, batching independence and the model contract (parity with pytorch-grad-cam is in tests_vision/)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch import explain
from interpretorch.attribution.cam import eigencam_rule, kernel_pca_projection, layer_cams
from interpretorch.attribution.cam_variants import finer_scores, gaussian_blur
from interpretorch.attribution.groupcam import blur_images
from interpretorch.capture import capture
from interpretorch.explanation import normalize_maps

NEW = ["eigengradcam", "gradcam_elementwise", "fem", "kpcacam", "shapleycam", "finercam", "smoothgradcampp", "sess",
       "groupcam", "sscam", "fullgrad"]
SMALL = {"smoothgradcampp": {"n_samples": 2}, "sess": {"num_scales": 2, "window": 24}, "groupcam": {"groups": 4},
         "sscam": {"n_samples": 1}}


class Toy(nn.Module):
    """score_k = sum(W_k * A) + 1/2 sum(Q_k * A^2) with A = the input itself, so gradient and Hessian are known."""

    def __init__(self, w: torch.Tensor, q: torch.Tensor | None = None) -> None:
        super().__init__()
        self.feat = nn.Identity()
        self.register_buffer("w", w)
        self.register_buffer("q", torch.zeros_like(w) if q is None else q)

    def forward(self, x):
        a = self.feat(x)
        return torch.einsum("kchw,bchw->bk", self.w, a) + 0.5 * torch.einsum("kchw,bchw->bk", self.q, a * a)


def _toy(k=3, c=4, h=5, w=6, seed=0, quad=False):
    g = torch.Generator().manual_seed(seed)
    wt = torch.randn(k, c, h, w, generator=g)
    q = torch.randn(k, c, h, w, generator=g) if quad else None
    a = torch.rand(2, c, h, w, generator=g) * 3
    return Toy(wt, q).eval(), a


def test_elementwise_fem_and_eigengrad_rules_by_hand():
    model, a = _toy()
    t = [0, 2]
    g = model.w[t]  # the gradient of a linear score is its weights
    res = layer_cams(model, a, ["gradcam_elementwise", "fem", "eigengradcam"], t, "feat", relu=False)
    assert torch.allclose(res["gradcam_elementwise"].raw, F.relu(g * a).sum(1), atol=1e-6)
    flat = a.flatten(2).numpy()
    th = flat.mean(-1) + 2 * flat.std(-1)  # numpy's population std, as pytorch-grad-cam
    wts = (flat > th[..., None]).mean(-1)
    assert np.allclose(res["fem"].raw.numpy(), np.einsum("bc,bchw->bhw", wts, a.numpy()), atol=1e-6)
    assert torch.allclose(res["eigengradcam"].raw, eigencam_rule(g * a), atol=1e-6)
    # the first principal component of g * a, by an SVD, up to the sign we fix
    x = (g * a)[0].reshape(a.shape[1], -1).T.double()
    x = x - x.mean(0)
    v = torch.linalg.svd(x, full_matrices=False).Vh[0]
    ref = (x @ v).reshape(a.shape[2:]).float()
    got = res["eigengradcam"].raw[0]
    assert torch.allclose(got, ref, atol=1e-4) or torch.allclose(got, -ref, atol=1e-4)
    hires = (g * a)[0].sum(0)
    assert float(((got - got.mean()) * (hires - hires.mean())).sum()) >= 0  # signed to agree with HiResCAM


@pytest.mark.parametrize("kernel", ["sigmoid", "rbf", "poly", "cosine"])
def test_kernel_pca_equals_scikit_learn_up_to_sign(kernel):
    from sklearn.decomposition import KernelPCA

    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 8, 4, 5, generator=g)
    ours = kernel_pca_projection(a, kernel)
    for i in range(2):
        x = a[i].reshape(8, -1).T.double().numpy()
        x = x - x.mean(0)
        ref = KernelPCA(n_components=1, kernel=kernel).fit_transform(x)[:, 0].reshape(4, 5)
        s = np.sign((ours[i].numpy() * ref).sum())
        assert np.allclose(ours[i].numpy(), s * ref, atol=1e-4), kernel
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_pca_projection(a, "laplace")


def test_shapleycam_uses_the_hessian_vector_product():
    model, a = _toy(quad=True)
    t = [1, 0]
    e = explain(model, a, "shapleycam", t, layer="feat", relu=False)
    g = model.w[t] + model.q[t] * a  # gradient of the quadratic score
    hvp = model.q[t] * a  # H a with H = diag(q)
    w = (g - 0.5 * hvp).mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(e.raw, (w * a).sum(1), atol=1e-5)
    # piecewise-linear after the layer: ShapleyCAM is Grad-CAM
    lin, _ = _toy()
    assert torch.allclose(explain(lin, a, "shapleycam", t, layer="feat").raw,
                          explain(lin, a, "gradcam", t, layer="feat").raw, atol=1e-6)


def test_finercam_is_gradcam_of_the_contrast(tiny, images):
    out = tiny(images)
    idx = out.argmax(1)
    s = finer_scores(out, idx, alpha=0.7, comparisons=2)
    # by hand for image 0: the two classes nearest the top logit, probability-weighted
    o, p = out[0].detach(), out[0].detach().softmax(0)
    near = sorted((j for j in range(5) if j != int(idx[0])), key=lambda j: abs(float(o[j] - o[idx[0]])))[:2]
    hand = sum(p[j] * (o[idx[0]] - 0.7 * o[j]) for j in near) / (sum(p[j] for j in near) + 1e-9)
    assert torch.allclose(s[0].detach(), hand, atol=1e-5)
    fin = explain(tiny, images, "finercam", options={"finercam": {"alpha": 0.7, "comparisons": 2}})
    ref = layer_cams(tiny, images, "gradcam", lambda out: finer_scores(out, out.argmax(1), 0.7, 2), None)["gradcam"]
    assert torch.allclose(fin.raw, ref.raw, atol=1e-6)
    assert torch.equal(fin.target, idx)
    with pytest.raises(ValueError, match="class targets"):
        explain(tiny, images, "finercam", lambda out: out[:, 0])


def _smooth_gcpp_direct(model, x, layer, idx, sigma, n, seed):
    """Smooth Grad-CAM++ one image and one noisy copy at a time."""
    from interpretorch.attribution.noise import unit_noise

    maps = []
    for i in range(x.shape[0]):
        with capture(model, layer, grad=False) as rec:
            model(x[i:i + 1])
        a = rec[layer].double()
        d = [torch.zeros_like(a) for _ in range(3)]
        for s in range(n):
            xi = x[i:i + 1] + sigma[i] * unit_noise([s], tuple(x.shape[1:]), seed)
            with capture(model, layer) as rec:
                o = model(xi)
                g = rec.gradients(o[:, int(idx[i])])[layer].double()
            for k in range(3):
                d[k] += g ** (k + 1) / n
        alpha = d[1] / (2 * d[1] + a.sum(dim=(2, 3), keepdim=True) * d[2])
        alpha = torch.nan_to_num(alpha)
        w = (alpha * F.relu(d[0])).sum(dim=(2, 3), keepdim=True)
        maps.append((w * a).sum(1)[0])
    return torch.stack(maps).float()


@pytest.mark.numerics
def test_smooth_gradcampp_equals_direct_unbatched(tiny, images):
    e = explain(tiny, images, "smoothgradcampp", layer="features.8", batch_size=3, relu=False,
                options={"smoothgradcampp": {"n_samples": 3, "seed": 5}})
    ref = _smooth_gcpp_direct(tiny, images, "features.8", e.target, e.extras["stdev"], 3, 5)
    assert torch.allclose(e.raw, ref, atol=1e-5 * float(ref.abs().max()))
    # one noiseless sample is Grad-CAM++
    one = explain(tiny, images, "smoothgradcampp", layer="features.8",
                  options={"smoothgradcampp": {"n_samples": 1, "stdev": 0.0}})
    gpp = explain(tiny, images, "gradcam++", layer="features.8")
    assert torch.allclose(one.raw, gpp.raw, atol=1e-5 * float(gpp.raw.abs().max()))


def _groupcam_direct(model, x, layer, groups, pct):
    """Group-CAM one image and one group at a time, as the reference code."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        with capture(model, layer) as rec:
            o = model(xi)
            c = int(o.argmax())
            g = rec.gradients(o[:, c])[layer]
        a = rec[layer]
        wa = g.mean(dim=(2, 3), keepdim=True) * a
        with torch.no_grad():
            blur = blur_images(xi)
            base = model(blur).softmax(1)[0, c]
            sal = torch.zeros(x.shape[-2:])
            for grp in wa.chunk(groups, 1):
                sm = F.relu(grp.sum(1, keepdim=True))
                th = np.percentile(sm.numpy(), pct)
                sm = torch.where(sm > float(th), sm, torch.zeros_like(sm))
                sm = F.interpolate(sm, size=x.shape[-2:], mode="bilinear", align_corners=False)
                if sm.max() == sm.min():
                    continue
                nm = (sm - sm.min()) / (sm.max() - sm.min())
                p = model(xi * nm + blur * (1 - nm)).softmax(1)[0, c]
                sal += (p - base) * nm[0, 0]
        out.append(F.relu(sal))
    return torch.stack(out)


@pytest.mark.numerics
def test_groupcam_equals_direct_unbatched(tiny, images):
    e = explain(tiny, images, "groupcam", layer="features.8", batch_size=5, options={"groupcam": {"groups": 4}})
    ref = _groupcam_direct(tiny, images, "features.8", 4, 70)
    assert torch.allclose(e.maps, ref, atol=1e-6 + 1e-5 * float(ref.abs().max()))


def test_blur_is_normalised_and_reflects():
    m = torch.rand(2, 9, 12)
    b = gaussian_blur(m, 5, 1.5)
    assert torch.allclose(b.mean(), m.mean(), atol=0.02) and b.shape == m.shape
    const = torch.full((1, 9, 12), 3.0)
    assert torch.allclose(gaussian_blur(const, 11, 5.0), const)


def test_sscam_without_noise_is_scorecam(tiny, images):
    e = explain(tiny, images, "sscam", layer="features.8", options={"sscam": {"n_samples": 1, "stdev": 0.0}})
    ref = explain(tiny, images, "scorecam", layer="features.8")
    assert torch.allclose(e.raw, ref.raw, atol=1e-5 * float(ref.raw.abs().max()))
    a = explain(tiny, images[1:3], "sscam", layer="features.8", batch_size=7, options={"sscam": {"n_samples": 2}})
    b = explain(tiny, images[2:3], "sscam", layer="features.8", batch_size=2, options={"sscam": {"n_samples": 2}})
    assert torch.allclose(a.raw[1:2], b.raw, atol=1e-5 * float(b.raw.abs().max()))


def test_sess_at_one_scale_is_the_normalised_base_cam(tiny, images):
    e = explain(tiny, images, "sess", layer="features.8",
                options={"sess": {"num_scales": 1, "smooth": False}})
    base = explain(tiny, images, "gradcam", layer="features.8")
    assert torch.allclose(e.maps, normalize_maps(base.maps), atol=1e-6)
    assert e.extras["tiles"] == 1
    # more scales: tiles of a 32 px image every 24 px at 24 and 31 px; batching does not change the result
    a = explain(tiny, images, "sess", layer="features.8", batch_size=3, options={"sess": {"scales": [24, 31],
                                                                                          "window": 24}})
    b = explain(tiny, images[1:2], "sess", layer="features.8", options={"sess": {"scales": [24, 31], "window": 24}})
    assert a.extras["tiles"] == 1 + 4
    assert torch.allclose(a.maps[1:2], b.maps, atol=1e-5)
    with pytest.raises(ValueError, match="at least the window"):
        explain(tiny, images, "sess", options={"sess": {"scales": [16]}})
    with pytest.raises(ValueError, match="layer CAM"):
        explain(tiny, images, "sess", options={"sess": {"base": "gradient"}})


@pytest.mark.parametrize("method", NEW)
def test_new_methods_keep_model_and_inputs(tiny, images, snapshot, method):
    snap = snapshot(tiny)
    before = images.clone()
    e = explain(tiny, images, method, target=[0, 1, 2, 3], options={method: SMALL[method]} if method in SMALL else None)
    assert e.maps.shape[0] == 4 and torch.isfinite(e.maps).all()
    assert torch.equal(e.target, torch.tensor([0, 1, 2, 3]))
    snap.assert_unchanged()
    assert torch.equal(images, before)
    with pytest.raises(ValueError, match="targets for 4 images"):
        explain(tiny, images, method, target=[0, 1])
