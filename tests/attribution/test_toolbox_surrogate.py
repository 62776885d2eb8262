"""LIME and KernelSHAP: equal to Captum's on the coalitions Captum sampled (its fit is float32, ours float64),
exact on an additive model, coalitions independent of batch and chunking."""
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from captum.attr import KernelShap, Lime
from torch import nn

from interpretorch.attribution import explain
from interpretorch.attribution.features import grid_masks
from interpretorch.attribution.surrogate import kernel_shap, kernel_shap_coalitions, lime, lime_coalitions
from interpretorch.models import TinyCNN


def assert_agree(ours, ref, tol=1e-5):
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    scale = ref.abs().max()
    assert scale > 0
    err = (ours.double() - ref.double()).abs().max()
    assert err <= tol * scale, f"max abs difference {err:.3g} > {tol} x {scale:.3g}"


def captum_with_its_coalitions(cls, model, x, **kw):
    """Captum's attributions and the coalitions it sampled for each image (read where it fits its model)."""
    attr = cls(model)
    rec = []
    fit = attr.interpretable_model.fit

    def recording_fit(loader, **k):
        rec.extend(list(loader))
        return fit(loader, **k)
    attr.interpretable_model.fit = recording_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = attr.attribute(x, **kw)
    return ref, torch.stack([r[0].long() for r in rec])


@pytest.fixture
def tiny64():
    model = TinyCNN().double().eval()
    with torch.no_grad():
        model.fc.weight.mul_(30)  # logits that move enough for Lasso(alpha=0.01) to keep some coefficients
    return model, torch.randn(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


@pytest.mark.numerics
@pytest.mark.parametrize("cls, ours", [(Lime, lime), (KernelShap, kernel_shap)])
def test_matches_captum_on_its_coalitions(tiny64, cls, ours, snapshot):
    model, x = tiny64
    fm = grid_masks(x, 4)  # 16 features
    torch.manual_seed(0)
    ref, z = captum_with_its_coalitions(cls, model, x, baselines=0.1, target=[1, 2], feature_mask=fm, n_samples=60,
                                             perturbations_per_eval=30)
    snap = snapshot(model)
    e = ours(model, x, [1, 2], features=fm, baseline=0.1, coalitions=z, batch_size=7)
    snap.assert_unchanged()
    assert_agree(e.maps, ref)
    assert int((e.extras["feature_values"] != 0).sum()) > 4
    if ours is kernel_shap:  # the heavy all-in / all-out coalitions pin the values to f(x) - f(baseline)
        assert e.extras["efficiency_gap"].abs().max() < 1e-4 * e.scores.abs().max()


@pytest.mark.numerics
def test_matches_captum_on_efficientnet_lite0(pretrained, sample_batch):
    """In float64 equal to 1e-5 of the map; in float32 within 5e-5 of it: float32 logits (about 10 here) round at
    about 1e-6, folding the BatchNorms into the convolutions (attribution/folded.py) rounds them differently, and
    the regression spreads that over the coefficients (measured 2.7e-6 absolute = 1.0e-5 of the map)."""
    x32 = F.interpolate(sample_batch[:1], size=(32, 32), mode="bilinear", align_corners=False)
    fm = grid_masks(x32, 8)  # 16 features
    for model, x, tol in ((copy.deepcopy(pretrained.model).double(), x32.double(), 1e-5),
                          (pretrained.model, x32, 5e-5)):
        t = int(model(x).argmax())
        for cls, ours in ((Lime, lime), (KernelShap, kernel_shap)):
            torch.manual_seed(0)
            ref, z = captum_with_its_coalitions(cls, model, x, target=t, feature_mask=fm, n_samples=24,
                                                perturbations_per_eval=24)
            assert_agree(ours(model, x, features=fm, coalitions=z, batch_size=16).maps, ref, tol)


def test_exact_on_an_additive_model_and_independent_of_chunking():
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3)).double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    fm = grid_masks(x, 4)  # 4 features
    w = lin[1].weight.detach()[2].view(1, 3, 8, 8)
    contrib = (w * (x - 0.2)).view(3, 3, 2, 4, 2, 4).sum((1, 3, 5)).reshape(3, 4)  # per feature, row by row
    ks = kernel_shap(lin, x, 2, features=fm, baseline=0.2, n_samples=12, batch_size=5)
    torch.testing.assert_close(ks.extras["feature_values"], contrib)
    lm = lime(lin, x, 2, features=fm, baseline=0.2, n_samples=12, alpha=0.0, batch_size=5)
    torch.testing.assert_close(lm.extras["feature_values"], contrib)
    torch.testing.assert_close(kernel_shap(lin, x, 2, features=fm, baseline=0.2, n_samples=12, batch_size=64).maps,
                               ks.maps)
    one = lime(lin, x[2:], 2, features=fm, baseline=0.2, n_samples=12, alpha=0.0)
    torch.testing.assert_close(one.maps, lm.maps[2:])


def test_coalition_draws():
    z = kernel_shap_coalitions(400, 6, seed=1)
    assert z[0].tolist() == [1] * 6 and z[1].tolist() == [0] * 6
    sizes = torch.bincount(z[2:].sum(1), minlength=7).double()
    assert sizes[0] == 0 and sizes[6] == 0
    k = torch.arange(1, 6, dtype=torch.float64)
    p = 5 / (k * (6 - k))
    p /= p.sum()
    assert (sizes[1:6] / 398 - p).abs().max() < 0.06  # sizes follow the Shapley kernel
    assert torch.equal(kernel_shap_coalitions(400, 6, seed=1), z)
    lz = lime_coalitions(500, 8, seed=2)
    assert abs(lz.double().mean() - 0.5) < 0.03 and not torch.equal(lz, lime_coalitions(500, 8, seed=3))


def test_bad_inputs_and_registry(tiny64):
    model, x = tiny64
    fm = grid_masks(x, 8)
    with pytest.raises(ValueError, match=r"coalitions must have shape"):
        lime(model, x, features=fm, coalitions=torch.ones(5, 3))
    with pytest.raises(ValueError, match="coalitions must hold 0"):
        kernel_shap(model, x, features=fm, coalitions=torch.full((5, 4), 2))
    with pytest.raises(ValueError, match="distance must be"):
        lime(model, x, features=fm, distance="manhattan")
    e = explain(model, x, "kernelshap", target=1, options={"kernelshap": {"features": "grid", "cell": 8,
                                                                          "n_samples": 10}})
    assert e.method == "kernel_shap" and e.maps.shape == x.shape
