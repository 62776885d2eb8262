"""timm:NAME and torchvision:NAME models (random weights, no network) explained end to end: their own preprocessing
and class names, the default CAM layer found, maps of the input's shape. Runs in the second CI environment
(torch 2.14.1 + torchvision 0.29.1 + timm)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.models import load_model


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def _same_as_library(loaded, library_transform, photo) -> None:
    """Our preprocessing of the photo agrees with the library's own transform."""
    with Image.open(photo) as im:
        ref = library_transform(im.convert("RGB"))
    ours = loaded.preprocess([np.asarray(Image.open(photo).convert("RGB"))])[0]
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 0.01, float((ours - ref).abs().mean())


def test_timm_model_preprocessing_and_names(photo):
    import timm
    from timm.data import create_transform, resolve_data_config

    loaded = load_model("timm:resnet18", pretrained=False)
    cfg = resolve_data_config({}, model=loaded.model)
    assert loaded.preprocess.size == cfg["input_size"][-1] and loaded.preprocess.mean == tuple(cfg["mean"])
    _same_as_library(loaded, create_transform(**cfg), photo)
    assert len(loaded.class_names) == 1000 and loaded.class_names[281].startswith("tabby")
    assert loaded.cam_layer == "layer4"
    with pytest.raises(ValueError, match="timm has no model"):
        load_model("timm:resnet_18_nope", pretrained=False)
    assert timm.__version__


def test_torchvision_model_preprocessing_and_names(photo):
    from torchvision.models import ResNet18_Weights

    loaded = load_model("torchvision:resnet18", pretrained=False)
    assert (loaded.preprocess.size, loaded.preprocess.resize) == (224, 256)
    _same_as_library(loaded, ResNet18_Weights.DEFAULT.transforms(), photo)
    assert loaded.class_names == ResNet18_Weights.DEFAULT.meta["categories"]
    with pytest.raises(ValueError, match="did you mean resnet18"):
        load_model("torchvision:resnet1", pretrained=False)


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:resnet18"])
def test_explained_end_to_end_with_the_default_cam_layer(spec, photo, tmp_path):
    out = tmp_path / "rep"
    assert main(["explain", str(photo), "--model", spec, "--no-pretrained", "--methods", "gradcam,eigencam,gradient",
                 "--topk", "2", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["layer"] == "layer4"  # the last spatial stage, found without --layer
    img = res["images"][0]
    for m in ("gradcam", "eigencam", "gradient"):
        assert np.load(out / img["methods"][m]["map"]).shape == (224, 224)
        with Image.open(out / img["methods"][m]["overlay"]) as im:
            assert im.size == (224, 224)
    assert set(img["ranks"]["2"]) == {"gradcam", "gradient"}
    assert len(img["predictions"]) == 5 and img["predictions"][0]["name"]
