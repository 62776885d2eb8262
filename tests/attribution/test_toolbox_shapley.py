"""GradientSHAP, Shapley value sampling, feature ablation and feature permutation: equal to Captum given the same
random draws, exact where the theory says so, batched across images without depending on the chunking."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import FeatureAblation, FeaturePermutation, GradientShap, ShapleyValueSampling
from torch import nn

from interpretorch.attribution import explain
from interpretorch.attribution.features import feature_masks, grid_masks, slic_masks
from interpretorch.attribution.shapley import feature_ablation, feature_permutation, gradient_shap, shapley_sampling
from interpretorch.models import TinyCNN

T = [1, 4, 7]


def assert_agree(ours, ref, tol=1e-5):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


def quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


@pytest.fixture
def tiny64():
    g = torch.Generator().manual_seed(0)
    return TinyCNN().double().eval(), torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=g)


def captum_gradshap_draws(k, n, b, shape, stdev, seed):
    """The draws Captum's GradientShap makes after np.random.seed(seed), torch.manual_seed(seed), in its order
    (reference index, noise, alpha; rows image-major), as our samples (sample-major)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    ind = np.random.choice(k, n * b)
    noise = torch.normal(0, torch.tensor(stdev).repeat((b * n,) + shape))
    alpha = np.random.uniform(0, 1, b * n)
    return {"baseline_index": torch.tensor(ind).view(b, n).T, "alpha": torch.tensor(alpha).view(b, n).T,
            "noise": noise.double().view((b, n) + shape).transpose(0, 1)}


@pytest.mark.numerics
@pytest.mark.parametrize("stdev", [0.0, 0.2])
def test_gradient_shap_matches_captum_with_the_same_draws(tiny64, stdev, snapshot):
    model, x = tiny64
    dist = torch.randn(4, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    samples = captum_gradshap_draws(4, 5, 3, (3, 16, 16), stdev, seed=3)
    np.random.seed(3)
    torch.manual_seed(3)
    ref = quiet(GradientShap(model).attribute, x, dist, target=T, n_samples=5, stdevs=stdev)
    snap = snapshot(model)
    ours = gradient_shap(model, x, T, baselines=dist, samples=samples, batch_size=4)
    snap.assert_unchanged()
    assert_agree(ours.maps, ref)


def test_gradient_shap_own_draws_do_not_depend_on_chunking_or_batch_and_are_exact_for_a_linear_model(tiny64):
    model, x = tiny64
    a = gradient_shap(model, x, 2, n_samples=6, stdev=0.1, seed=4, batch_size=5)
    b = gradient_shap(model, x, 2, n_samples=6, stdev=0.1, seed=4, batch_size=64)
    torch.testing.assert_close(a.maps, b.maps)
    one = gradient_shap(model, x[1:2], 2, n_samples=6, stdev=0.1, seed=4)
    torch.testing.assert_close(one.maps, a.maps[1:2])
    assert not torch.allclose(gradient_shap(model, x, 2, n_samples=6, stdev=0.1, seed=5).maps, a.maps)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).double()
    dist = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    e = gradient_shap(lin, x, 1, baselines=dist, n_samples=20)
    w = lin[1].weight.detach()[1].view(1, 3, 16, 16)
    # every sample attributes (x - x'_k) w; the mean over the drawn k's
    counts = torch.zeros(3, dtype=torch.float64)
    from interpretorch.core.seeding import seed_for
    for s in range(20):
        counts[int(torch.randint(3, (1,), generator=torch.Generator().manual_seed(seed_for(0, s, 1))))] += 1
    expected = (x - (counts.view(3, 1, 1, 1) * dist).sum(0) / 20) * w
    torch.testing.assert_close(e.maps, expected)


@pytest.mark.numerics
@pytest.mark.parametrize("target", ["top1", T])
def test_shapley_sampling_matches_captum_with_the_same_orders(tiny64, target):
    model, x = tiny64
    fm = grid_masks(x, (8, 4))  # 8 features
    torch.manual_seed(5)
    perms = torch.stack([torch.randperm(8) for _ in range(4)])
    torch.manual_seed(5)
    t = model(x).argmax(1) if target == "top1" else target
    ref = quiet(ShapleyValueSampling(model).attribute, x, baselines=0.1, target=t, feature_mask=fm, n_samples=4,
                perturbations_per_eval=8)
    ours = shapley_sampling(model, x, target, features=fm, permutations=perms, baseline=0.1, batch_size=7)
    assert_agree(ours.maps, ref)  # Captum accumulates in float32
    # efficiency: the feature values add up to f(x) - f(baseline) for every sampled order
    torch.testing.assert_close(ours.extras["feature_values"].sum(1), ours.scores - ours.extras["baseline_scores"])


def test_shapley_sampling_own_orders_per_image_superpixels_and_chunking(tiny64):
    model, _ = tiny64
    from skimage import data

    x = torch.cat([F.interpolate(torch.from_numpy(im).permute(2, 0, 1)[None].double() / 255, size=(24, 24),
                                 mode="bilinear", align_corners=False) for im in (data.chelsea(), data.coffee())])
    a = shapley_sampling(model, x, 2, n_segments=8, n_samples=3, batch_size=5)
    nf = a.extras["n_features"]
    assert nf.min() >= 2 and len(set(nf.tolist())) == 2  # per-image superpixels, different counts
    b = shapley_sampling(model, x, 2, n_segments=8, n_samples=3, batch_size=50)
    torch.testing.assert_close(a.maps, b.maps)
    one = shapley_sampling(model, x[1:], 2, n_segments=8, n_samples=3)
    torch.testing.assert_close(one.maps, a.maps[1:])
    assert a.extras["forward_passes"] == 2 + 3 * int((nf - 1).sum())  # the full coalition is the clean image
    torch.testing.assert_close(a.extras["feature_values"].sum(1), a.scores - a.extras["baseline_scores"])


@pytest.mark.numerics
def test_feature_ablation_and_permutation_match_captum(tiny64):
    model, x = tiny64
    fm = grid_masks(x, 4)
    ref = quiet(FeatureAblation(model).attribute, x, baselines=0.1, target=T, feature_mask=fm,
                perturbations_per_eval=8)
    assert_agree(feature_ablation(model, x, T, features=fm, baseline=0.1, batch_size=5).maps, ref)
    torch.manual_seed(7)
    perms = []
    for _ in range(16):  # Captum's draws: a new permutation of the batch per feature, never the identity
        p = torch.randperm(3)
        while bool((p == torch.arange(3)).all()):
            p = torch.randperm(3)
        perms.append(p)
    torch.manual_seed(7)
    ref = quiet(FeaturePermutation(model).attribute, x, target=T, feature_mask=fm)
    ours = feature_permutation(model, x, T, features=fm, permutations=torch.stack(perms), batch_size=5)
    assert_agree(ours.maps, ref)
    own = feature_permutation(model, x, T, features="grid", cell=4, batch_size=4)
    assert all(not bool((p == torch.arange(3)).all()) for p in own.extras["permutations"])
    torch.testing.assert_close(own.maps, feature_permutation(model, x, T, features="grid", cell=4).maps)


@pytest.mark.numerics
def test_feature_ablation_skips_features_already_at_the_baseline(tiny64):
    model, x = tiny64
    x = x.clone()
    x[0, :, :, :8] = 0.1  # image 0: the left half is the baseline already (8 of its 16 grid cells)
    x[1, 1, :4, :4] = 0.1  # image 1: one channel of one cell only; the cell still changes when ablated
    fm = grid_masks(x, 4)
    ref = quiet(FeatureAblation(model).attribute, x, baselines=0.1, target=T, feature_mask=fm,
                perturbations_per_eval=8)
    e = feature_ablation(model, x, T, features=fm, baseline=0.1, batch_size=5)
    assert_agree(e.maps, ref)
    assert e.extras["unchanged_features"] == 8 and e.extras["forward_passes"] == 3 * 16 - 8
    assert bool((e.extras["feature_values"][0].view(4, 4)[:, :2] == 0).all())
    assert ref[0, :, :, :8].abs().max() < 1e-12  # Captum runs those rows and gets the image's own score


@pytest.mark.numerics
def test_feature_methods_and_gradient_shap_match_captum_on_efficientnet_lite0(pretrained, sample_batch):
    model = pretrained.model
    x = F.interpolate(sample_batch[:2], size=(32, 32), mode="bilinear", align_corners=False)
    fm = grid_masks(x, 16)  # 4 features
    t = model(x).argmax(1)
    torch.manual_seed(0)
    perms = torch.stack([torch.randperm(4) for _ in range(2)])
    torch.manual_seed(0)
    ref = quiet(ShapleyValueSampling(model).attribute, x, target=t, feature_mask=fm, n_samples=2,
                perturbations_per_eval=4)
    assert_agree(shapley_sampling(model, x, features=fm, permutations=perms, batch_size=4).maps, ref)
    ref = quiet(FeatureAblation(model).attribute, x, target=t, feature_mask=fm, perturbations_per_eval=4)
    assert_agree(feature_ablation(model, x, features=fm, batch_size=3).maps, ref)
    torch.manual_seed(5)
    perms = [torch.tensor([1, 0]) for _ in range(4)]  # two images: Captum's only non-identity permutation
    ref = quiet(FeaturePermutation(model).attribute, x, target=t, feature_mask=fm)
    assert_agree(feature_permutation(model, x, features=fm, permutations=torch.stack(perms), batch_size=3).maps,
                 ref)
    dist = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    samples = captum_gradshap_draws(2, 2, 2, (3, 32, 32), 0.0, seed=1)
    np.random.seed(1)
    torch.manual_seed(1)
    ref = quiet(GradientShap(model).attribute, x, dist, target=t, n_samples=2)
    samples = {k: v.float() if v.is_floating_point() else v for k, v in samples.items()}
    assert_agree(gradient_shap(model, x, baselines=dist, samples=samples, batch_size=3).maps, ref)


def test_feature_masks():
    x = torch.zeros(2, 3, 12, 16)
    g = feature_masks(x, "grid", cell=4)
    assert g.shape == (1, 1, 12, 16) and int(g.max()) == 11 and g[0, 0, 0, 4] == 1 and g[0, 0, 4, 0] == 4
    user = torch.tensor([[5, 5, 9], [9, 7, 7], [5, 7, 9]]).repeat_interleave(4, 0).repeat_interleave(4, 1)
    m = feature_masks(torch.zeros(1, 3, 12, 12), user)
    assert m.shape == (1, 1, 12, 12) and set(m.unique().tolist()) == {0, 1, 2}  # 5, 7, 9 renumbered
    from skimage import data

    img = torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float()
    s = slic_masks(F.interpolate(img, size=(64, 64)), n_segments=30)
    assert 10 <= int(s.max()) + 1 <= 60 and set(s.unique().tolist()) == set(range(int(s.max()) + 1))
    with pytest.raises(ValueError, match="unknown features 'quickshift'"):
        feature_masks(x, "quickshift")
    with pytest.raises(ValueError, match="feature mask must have shape"):
        feature_masks(x, torch.zeros(5, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer labels"):
        feature_masks(x, torch.zeros(12, 16))


def test_bad_inputs(tiny64):
    model, x = tiny64
    with pytest.raises(ValueError, match="at least 2 images"):
        feature_permutation(model, x[:1])
    with pytest.raises(ValueError, match="one feature mask shared"):
        feature_permutation(model, x, features="slic")
    with pytest.raises(ValueError, match=r"permutations must have shape \(n, F\)"):
        shapley_sampling(model, x, features=grid_masks(x, 8), permutations=torch.arange(3)[None])
    with pytest.raises(ValueError, match="permutation of 0..F-1"):
        shapley_sampling(model, x, features=grid_masks(x, 8), permutations=torch.tensor([[0, 0, 1, 2]]))
    with pytest.raises(ValueError, match=r"samples\['baseline_index'\] and samples\['alpha'\]"):
        gradient_shap(model, x, baselines=x, samples={"baseline_index": torch.zeros(2, 2), "alpha": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="stdev must be >= 0"):
        gradient_shap(model, x, stdev=-1.0)
    e = explain(model, x, "svs", target=1, options={"svs": {"features": "grid", "cell": 8, "n_samples": 2}})
    assert e.method == "shapley_sampling" and e.maps.shape == x.shape
