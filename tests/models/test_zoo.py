"""The pretrained model zoo, preprocessing, layer lookup and resuming a forward mid-network."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.capture import default_cam_layer
from interpretorch.models import (get_layer, imagenet_classes, load_model, load_image, ImageLoadError, tail_after,
                                  TinyCNN)


@pytest.mark.numerics
def test_pretrained_classifies_sample_photos(pretrained, sample_batch):
    with torch.no_grad():
        probs = pretrained.model(sample_batch).softmax(1)
    top = probs.argmax(1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea predicted as {top[0]} {imagenet_classes()[top[0]]}"
    assert top[1] in (967, 968), f"coffee predicted as {top[1]} {imagenet_classes()[top[1]]}"
    assert probs[0, 281:286].sum() > 0.8
    assert probs[1, [967, 968]].sum() > 0.8


def test_class_names_and_preprocessing(pretrained):
    names = imagenet_classes()
    assert len(names) == 1000 and names[285].startswith("Egyptian cat") and names[967] == "espresso"
    assert pretrained.preprocess.size == 224
    assert pretrained.preprocess.mean == (0.485, 0.456, 0.406)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(pretrained.preprocess.denormalize(pretrained.preprocess.normalize(x)), x, atol=1e-6)


def test_default_cam_layer_is_last_spatial_module(pretrained, sample_batch):
    assert default_cam_layer(pretrained.model, sample_batch[:1]) == "_head_act"
    assert default_cam_layer(TinyCNN(), torch.randn(1, 3, 32, 32)) == "features"


def test_unknown_layer_lists_closest_names(pretrained):
    with pytest.raises(KeyError, match=r"_head_act"):
        get_layer(pretrained.model, "_head_actt")
    with pytest.raises(KeyError, match=r"_blocks\.15"):
        get_layer(pretrained.model, "_blocks.15._project_cov")


def test_tail_resumes_forward(pretrained, sample_batch):
    model = pretrained.model
    acts = {}
    h = get_layer(model, "_blocks.12").register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    with torch.no_grad():
        full = model(sample_batch[:2])
    h.remove()
    tail = tail_after(model, "_blocks.12")
    assert tail is not None
    with torch.no_grad():
        assert torch.allclose(tail(acts["a"]), full, atol=1e-4)
    # Inside a residual block the rest of the forward is not a chain: no tail.
    assert tail_after(model, "_blocks.12._project_conv") is None


def test_user_model_from_factory_and_torchscript(tmp_path):
    lm = load_model("interpretorch.models.tiny:TinyCNN")
    assert isinstance(lm.model, TinyCNN) and not lm.model.training
    scripted = torch.jit.trace(TinyCNN().eval(), torch.randn(1, 3, 32, 32))
    path = tmp_path / "m.pt"
    torch.jit.save(scripted, str(path))
    ts = load_model(str(path))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ts.model(x), TinyCNN().eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("resnet9000")


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageLoadError, match="broken.jpg"):
        load_image(bad)
