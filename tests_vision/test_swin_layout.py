"""timm's Swin (channels-last stages) explained with its default CAM layer agrees with pytorch-grad-cam given the
NHWC -> NCHW reshape transform its Swin tutorial uses (random weights, fixed seed)."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.numerics
def test_swin_gradcam_matches_pytorch_grad_cam_with_its_reshape_transform():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from interpretorch import explain
    from interpretorch.models import load_model

    torch.manual_seed(0)
    loaded = load_model("timm:swin_tiny_patch4_window7_224", pretrained=False)
    assert loaded.cam_layer == "layers.3"
    x = torch.rand(2, 3, 224, 224)
    ours = explain(loaded.model, x, "gradcam", target=[3, 7], layer=loaded.cam_layer).maps
    with GradCAM(loaded.model, [loaded.model.layers[3]], reshape_transform=lambda t: t.permute(0, 3, 1, 2)) as cam:
        theirs = torch.from_numpy(cam(x, [ClassifierOutputTarget(3), ClassifierOutputTarget(7)]))
    for a, b in zip(ours, theirs):
        r = torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1]
        assert r >= 0.99, float(r)
