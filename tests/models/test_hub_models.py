"""Models by name: a Hugging Face image classifier from a local folder (a tiny ViT built from a config, no network)
with its processor's preprocessing and id2label names; the prefixes' errors; Preprocess's resize and crop modes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.models import load_model
from interpretorch.models.preprocess import Preprocess


@pytest.fixture(scope="module")
def tiny_hf_vit(tmp_path_factory):
    """A 2-layer ViTForImageClassification (32 px, 8 px patches, 3 labels) and its image processor, saved."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=2, intermediate_size=64, num_labels=3,
                    id2label={0: "cat", 1: "espresso, coffee", 2: "rocket"}, label2id={"cat": 0, "espresso, coffee": 1,
                                                                                     "rocket": 2})
    path = tmp_path_factory.mktemp("hf") / "tiny-vit"
    ViTForImageClassification(cfg).eval().save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
                      ).save_pretrained(path)
    return path


def test_hf_classifier_loads_with_its_preprocessing_and_labels(tiny_hf_vit, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import ViTForImageClassification

    loaded = load_model(f"hf:{tiny_hf_vit}")
    pre = loaded.preprocess
    assert (pre.size, pre.crop, pre.mean, pre.std) == (32, False, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert loaded.class_names == ["cat", "espresso, coffee", "rocket"]
    assert loaded.cam_layer.startswith("model.vit.") and loaded.cam_layer.endswith("1.layernorm_before")  # last block
    x = torch.rand(2, 3, 32, 32)
    ref = ViTForImageClassification.from_pretrained(tiny_hf_vit).eval()
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), ref(pixel_values=x).logits, atol=1e-6)  # the same pretrained weights
    random = load_model(f"hf:{tiny_hf_vit}", pretrained=False)
    with torch.no_grad():
        assert not torch.allclose(random.model(x), ref(pixel_values=x).logits)


def test_hf_model_explained_end_to_end(tiny_hf_vit, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "rep"
    assert main(["explain", str(img), "--model", f"hf:{tiny_hf_vit}", "--methods", "gradcam,eigencam,gradient",
                 "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["layer"].endswith("1.layernorm_before")
    assert res["images"][0]["predictions"][0]["name"] in ("cat", "espresso, coffee", "rocket")
    assert np.load(out / res["images"][0]["methods"]["gradcam"]["map"]).shape == (32, 32)
    assert "espresso" in (out / "index.html").read_text() or res["images"][0]["predictions"]


def test_hub_prefix_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    assert main(["explain", str(img), "--model", f"hf:{tmp_path / 'nothing-here'}", "--out", str(tmp_path)]) == 2
    assert "not a Hugging Face image classifier" in capsys.readouterr().err
    assert main(["explain", str(img), "--model", "hf:", "--out", str(tmp_path)]) == 2
    assert "give a model name" in capsys.readouterr().err
    assert main(["explain", str(img), "--model", "tiny_cnn", "--no-pretrained", "--out", str(tmp_path)]) == 2
    assert "--no-pretrained is for" in capsys.readouterr().err


def test_preprocess_resize_margin_and_squash():
    arr = np.zeros((100, 200, 3), dtype=np.uint8)
    arr[:, :100] = 255  # left half white
    # torchvision-style: shorter side to 64, then a 56 x 56 centre crop (the crop sees the middle of the image)
    crop = Preprocess(56, resize=64, interpolation="bilinear").display([arr])
    assert crop.shape == (1, 3, 56, 56)
    assert crop[0, 0, :, :20].mean() > 0.99 and crop[0, 0, :, -20:].mean() < 0.01
    squash = Preprocess(32, crop=False).display([arr])  # ViT-style: the whole image, squashed
    assert squash.shape == (1, 3, 32, 32) and squash[0, 0, :, :14].mean() > 0.99
    assert Preprocess(224, resize=256).with_size(112).resize == 128
    with pytest.raises(ValueError, match="interpolation"):
        Preprocess(8, interpolation="cubic").display([arr])
