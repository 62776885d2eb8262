"""torchvision:NAME detectors and segmenters (random weights, no network): the batched wrapper of detectors, the
output structure, the CAM layer of each family, and the user's model left as it was. Runs in the second CI
environment (torch 2.14.1 + torchvision 0.29.1)."""
from __future__ import annotations

import pytest
import torch

from interpretorch.models import load_model
from interpretorch.models.vision_tasks import BatchedDetector, batched_detector, default_task_layer


DETECTORS = {"fasterrcnn_mobilenet_v3_large_fpn": "model.backbone.body.16",
             "retinanet_resnet50_fpn": "model.backbone.body.layer4",
             "fcos_resnet50_fpn": "model.backbone.body.layer4",
             "ssdlite320_mobilenet_v3_large": "model.backbone.features.1",
             "maskrcnn_resnet50_fpn": "model.backbone.body.layer4"}
SEGMENTERS = {"deeplabv3_mobilenet_v3_large": "backbone.16", "fcn_resnet50": "backbone.layer4",
              "lraspp_mobilenet_v3_large": "backbone.16"}


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detectors_load_wrapped_with_their_cam_layer(name):
    loaded = load_model(f"torchvision:{name}", pretrained=False)
    assert isinstance(loaded.model, BatchedDetector) and not loaded.model.training
    assert loaded.cam_layer == DETECTORS[name]
    assert loaded.preprocess.mean == (0.0, 0.0, 0.0) and loaded.preprocess.std == (1.0, 1.0, 1.0)
    assert loaded.class_names[0] == "__background__" and len(loaded.class_names) == 91
    dict(loaded.model.named_modules())[loaded.cam_layer]  # the layer exists


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_fpn", "ssdlite320_mobilenet_v3_large"])
def test_batched_detector_gives_one_dict_per_row_with_boxes_in_input_pixels(name):
    from torchvision.models import get_model

    torch.manual_seed(0)
    model = get_model(name, weights=None, weights_backbone=None, box_score_thresh=0.0) if "rcnn" in name else \
        get_model(name, weights=None, weights_backbone=None, score_thresh=0.0)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = batched_detector(model)
    x = torch.rand(2, 3, 160, 200)
    with torch.no_grad():
        ours = wrapped(x)
        theirs = model([x[0], x[1]])
    assert len(ours) == 2
    for a, b in zip(ours, theirs):
        assert set(a) == {"boxes", "labels", "scores"} and len(a["scores"]) > 0
        torch.testing.assert_close(a["boxes"], b["boxes"])
        assert float(a["boxes"][:, 2].max()) <= 200 + 1e-3 and float(a["boxes"][:, 3].max()) <= 160 + 1e-3
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert wrapped.model is model and batched_detector(torch.nn.Linear(2, 2)).__class__ is torch.nn.Linear


@pytest.mark.parametrize("name", list(SEGMENTERS))
def test_segmenters_load_with_their_cam_layer(name):
    loaded = load_model(f"torchvision:{name}", pretrained=False)
    assert loaded.cam_layer == SEGMENTERS[name] == default_task_layer(loaded.model)
    assert loaded.class_names[0] == "__background__" and len(loaded.class_names) == 21
    if "mobilenet" in name:  # the ResNet-50 ones cost seconds per call on a loaded CPU
        with torch.no_grad():
            out = loaded.model(torch.rand(1, 3, 96, 96))
        assert out["out"].shape == (1, 21, 96, 96)


def test_wrapper_refuses_a_classifier():
    with pytest.raises(TypeError, match="not a torchvision detector"):
        BatchedDetector(torch.nn.Conv2d(3, 3, 1))
