"""Image-transformer methods against direct computations; batches equal single calls; the model is unchanged."""
from __future__ import annotations

import pytest
import torch

from interpretorch.capture import capture
from interpretorch.transformers.attention import attention_maps
from interpretorch.transformers.rollout import rollout_matrix
from interpretorch.transformers.vision import (attention_rollout, gradient_rollout, patch_grid, raw_attention,
                                               token_gradcam)


def test_rollout_and_raw_attention_maps(vit, snapshot):
    x = torch.randn(3, 3, 32, 32)
    snap = snapshot(vit)
    attn = attention_maps(vit, x)
    e = attention_rollout(vit, x, discard_ratio=0.2, head_fusion="max", batch_size=2)
    assert e.raw.shape == (3, 4, 4) and e.maps.shape == (3, 32, 32)
    expect = rollout_matrix(attn, discard_ratio=0.2, head_fusion="max")[:, 0, 1:].reshape(3, 4, 4)
    assert torch.allclose(e.raw, expect, atol=1e-6)
    raw = raw_attention(vit, x)
    assert torch.allclose(raw.raw, attn[:, -1].mean(1)[:, 0, 1:].reshape(3, 4, 4), atol=1e-6)
    snap.assert_unchanged()


@pytest.mark.numerics
def test_gradient_rollout_batch_equals_single(vit, snapshot):
    x = torch.randn(3, 3, 32, 32)
    snap = snapshot(vit)
    e = gradient_rollout(vit, x, target=[0, 1, 2], batch_size=3)
    singles = torch.cat([gradient_rollout(vit, x[i:i + 1], target=i).raw for i in range(3)])
    assert torch.allclose(e.raw, singles, atol=1e-6)
    assert (e.raw >= 0).all()  # I + sum of products of non-negative matrices
    e1 = gradient_rollout(vit, x, target=[0, 1, 2], start_layer=1)
    assert not torch.allclose(e1.raw, e.raw)
    snap.assert_unchanged()


def test_token_gradcam_matches_direct_computation(vit, snapshot):
    x = torch.randn(2, 3, 32, 32)
    snap = snapshot(vit)
    e = token_gradcam(vit, x, target=1)
    assert e.layer == "blocks.1.norm1"
    with capture(vit, ["blocks.1.norm1"]) as rec:
        s = vit(x)[:, 1]
        g = rec.gradients(s)["blocks.1.norm1"][:, 1:]
        a = rec["blocks.1.norm1"].detach()[:, 1:]
    expect = torch.relu((g.mean(1, keepdim=True) * a).sum(-1)).reshape(2, 4, 4)
    assert torch.allclose(e.raw, expect, atol=1e-6)
    snap.assert_unchanged()


def test_grid_and_errors(vit):
    assert patch_grid(vit, 17) == (4, 4)
    with pytest.raises(ValueError, match="square patch grid"):
        patch_grid(torch.nn.Identity(), 18)
    with pytest.raises(ValueError, match="batch"):
        attention_rollout(vit, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="NaN"):
        attention_rollout(vit, torch.full((1, 3, 32, 32), float("nan")))


def test_registered_methods_run_through_explain(vit, snapshot):
    from interpretorch.attribution.registry import explain, get_method
    from interpretorch.transformers.methods import NAMES, register_methods

    register_methods()
    register_methods()  # idempotent
    assert get_method("chefer").name == "gradient_rollout"
    x = torch.randn(2, 3, 32, 32)
    snap = snapshot(vit)
    out = explain(vit, x, list(NAMES), target=[0, 1])
    assert set(out) == set(NAMES)
    direct = gradient_rollout(vit, x, target=[0, 1])
    assert torch.allclose(out["gradient_rollout"].maps, direct.maps)
    for e in out.values():
        assert e.maps.shape == (2, 32, 32)
    snap.assert_unchanged()


@pytest.mark.numerics
def test_zoo_tiny_vit_classifies_held_out_images_and_points_at_objects():
    from interpretorch.data.synthetic import make_localisation_set
    from interpretorch.metrics.localisation import pointing_game
    from interpretorch.models import load_model
    from interpretorch.transformers.vision import attnlrp

    lm = load_model("tiny_vit")
    assert lm.cam_layer == "blocks.3.norm1" and lm.class_names[0] == "disk"
    ds = make_localisation_set(32, seed=3)
    x = lm.preprocess.normalize(ds.images)
    with torch.no_grad():
        acc = (lm.model(x).argmax(1) == ds.labels).float().mean()
    assert acc >= 0.95
    hits = pointing_game(attnlrp(lm.model, x[:16], target=ds.labels[:16]).maps, masks=ds.masks[:16], tolerance=4)
    assert hits.mean() >= 0.8  # chance is about 0.16 at 4 px
