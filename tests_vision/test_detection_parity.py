"""Grad-CAM of detection and segmentation targets against pytorch-grad-cam's FasterRCNNBoxScoreTarget and
SemanticSegmentationTarget, on random-weight torchvision models (fixed seed): Pearson r >= 0.99 per map. Each
library works on its own copy of the model (pytorch-grad-cam's backward fills parameter gradients)."""
from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("TQDM_DISABLE", "1")


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.mark.numerics
def test_faster_rcnn_box_score_target_matches_pytorch_grad_cam():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from torchvision.models import get_model

    from interpretorch import explain
    from interpretorch.core.targets import DetectionTarget
    from interpretorch.models.vision_tasks import BatchedDetector, default_task_layer

    torch.manual_seed(0)
    model = get_model("fasterrcnn_mobilenet_v3_large_fpn", weights=None, weights_backbone=None,
                      box_score_thresh=0.0, min_size=224, max_size=224).eval()
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        det = model(x)[0]
    boxes, labels = det["boxes"][:3], det["labels"][:3]
    assert len(boxes) == 3
    ours_model = BatchedDetector(copy.deepcopy(model))
    layer = default_task_layer(ours_model)
    assert layer == "model.backbone.body.16"
    theirs_model = copy.deepcopy(model)
    for k in range(3):  # one detection at a time, and all three in one target
        sel = slice(k, k + 1)
        ours = explain(ours_model, x, "gradcam", target=DetectionTarget(boxes=boxes[sel], labels=labels[sel]),
                       layer=layer).maps[0]
        with GradCAM(theirs_model, [theirs_model.backbone.body["16"]]) as cam:
            theirs = cam(x, targets=[FasterRCNNBoxScoreTarget(labels[sel].tolist(), boxes[sel].numpy())])[0]
        r = _pearson(ours, torch.from_numpy(theirs))
        assert r >= 0.99, (k, r)
    ours = explain(ours_model, x, "gradcam", target=DetectionTarget(boxes=boxes, labels=labels), layer=layer).maps[0]
    with GradCAM(theirs_model, [theirs_model.backbone.body["16"]]) as cam:
        theirs = cam(x, targets=[FasterRCNNBoxScoreTarget(labels.tolist(), boxes.numpy())])[0]
    assert _pearson(ours, torch.from_numpy(theirs)) >= 0.99


class _Out(torch.nn.Module):
    """pytorch-grad-cam's tutorial wrapper: the segmenter's ``out`` logits as a tensor."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


@pytest.mark.numerics
@pytest.mark.parametrize("name,layer", [("deeplabv3_mobilenet_v3_large", "16"), ("lraspp_mobilenet_v3_large", "16")])
def test_semantic_segmentation_target_matches_pytorch_grad_cam(name, layer):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    from torchvision.models import get_model

    from interpretorch import explain
    from interpretorch.core.targets import SegmentationTarget
    from interpretorch.models.vision_tasks import default_task_layer

    import torch.nn.functional as F
    from skimage import data

    torch.manual_seed(0)
    model = get_model(name, weights=None, weights_backbone=None).eval()
    assert default_task_layer(model) == f"backbone.{layer}"
    # a photo, normalised as the weights expect: on noise the random segmenters' Grad-CAM is all zero
    x = F.interpolate(torch.from_numpy(data.chelsea()).permute(2, 0, 1)[None].float() / 255, size=(128, 128),
                      mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    mask = torch.zeros(128, 128, dtype=torch.bool)
    mask[16:64, 40:100] = True  # a region, as a user would draw one (the random model predicts one class everywhere)
    ours_model, theirs_model = copy.deepcopy(model), _Out(copy.deepcopy(model))
    for c in (3, 7):
        ours = explain(ours_model, x, "gradcam", target=SegmentationTarget(category=c, mask=mask),
                       layer=f"backbone.{layer}").maps[0]
        with GradCAM(theirs_model, [theirs_model.model.backbone[layer]]) as cam:
            theirs = cam(x, targets=[SemanticSegmentationTarget(c, mask.numpy().astype(np.float32))])[0]
        assert float(ours.max()) > 0 and theirs.max() > 0  # not two constant maps
        r = _pearson(ours, torch.from_numpy(theirs))
        assert r >= 0.99, (c, r)
