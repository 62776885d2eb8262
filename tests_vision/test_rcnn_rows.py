"""BatchedDetector's R-CNN path (interpretorch.models.rcnn_rows): the box branch differentiated on the kept
detections' rows only gives torchvision's own detections and the same maps as calling the model as it is; any
R-CNN it cannot prove row-wise is called as it is. Random-weight torchvision models, fixed seed, small images."""
from __future__ import annotations

import copy

import pytest
import torch

from interpretorch.models.rcnn_rows import kept_rows_apply
from interpretorch.models.vision_tasks import BatchedDetector


class _Plain(torch.nn.Module):
    """The detector called as it is (torchvision's forward over every proposal), the same module names."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.model(list(x.unbind(0)))


def _detector(name: str, size: int) -> torch.nn.Module:
    from torchvision.models import get_model

    torch.manual_seed(0)
    return get_model(name, weights=None, weights_backbone=None, box_score_thresh=0.0, min_size=size,
                     max_size=size).eval()


@pytest.mark.numerics
@pytest.mark.parametrize("name,size,batch", [("fasterrcnn_mobilenet_v3_large_fpn", 160, 2),
                                             ("maskrcnn_resnet50_fpn", 96, 1)])
def test_outputs_equal_torchvision_with_and_without_gradients(name, size, batch):
    model = _detector(name, size)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert kept_rows_apply(model)
    wrapped = BatchedDetector(model)
    x = torch.rand(batch, 3, size - 20, size)
    with torch.no_grad():  # the first pass's numbers: torchvision's, bit for bit
        ours, theirs = wrapped(x), model(list(x.unbind(0)))
    keys = {"boxes", "labels", "scores"} | ({"masks"} if "mask" in name else set())
    for a, b in zip(ours, theirs):
        assert set(a) == set(b) == keys and len(b["scores"]) == 100
        for k in keys:
            assert torch.equal(a[k], b[k]), k
    ours, theirs = wrapped(x), model(list(x.unbind(0)))  # the kept rows recomputed with their graph
    for a, b in zip(ours, theirs):
        assert torch.equal(a["labels"], b["labels"])
        assert a["scores"].requires_grad and a["boxes"].requires_grad
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-3)  # pixels
        if "masks" in keys:
            torch.testing.assert_close(a["masks"], b["masks"], rtol=1e-5, atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


@pytest.mark.numerics
def test_detection_maps_equal_the_plain_path():
    from interpretorch.attribution.registry import explain_targets
    from interpretorch.core.targets import DetectionTarget

    model = _detector("fasterrcnn_mobilenet_v3_large_fpn", 160)
    x = torch.rand(1, 3, 140, 160)
    with torch.no_grad():
        det = model(list(x.unbind(0)))[0]
    targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(det["boxes"][:3], det["labels"][:3])]
    targets.append(DetectionTarget(index=5))
    fast, plain = BatchedDetector(copy.deepcopy(model)), _Plain(copy.deepcopy(model))
    for method, layer in (("gradcam", "model.backbone.body.16"), ("gradient", None)):
        a = explain_targets(fast, x[0], targets, method, layer=layer)
        b = explain_targets(plain, x[0], targets, method, layer=layer)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        for p, q in zip(a.maps, b.maps):
            scale = float(q.abs().max())
            assert scale > 0, method  # not two zero maps
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.numerics
def test_mask_rcnn_gradcam_equals_the_plain_path():
    from interpretorch import explain
    from interpretorch.core.targets import DetectionTarget

    model = _detector("maskrcnn_resnet50_fpn", 96)
    x = torch.rand(1, 3, 80, 96)
    fast, plain = BatchedDetector(copy.deepcopy(model)), _Plain(copy.deepcopy(model))
    target = DetectionTarget(index=0)
    a = explain(fast, x, "gradcam", target=target, layer="model.backbone.body.layer4").maps[0]
    b = explain(plain, x, "gradcam", target=target, layer="model.backbone.body.layer4").maps[0]
    assert float(b.abs().max()) > 0
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_falls_back_where_rows_are_not_provably_separate():
    from torchvision.models.detection.faster_rcnn import TwoMLPHead

    model = _detector("fasterrcnn_mobilenet_v3_large_fpn", 96)
    assert kept_rows_apply(model)
    trained = copy.deepcopy(model).train()
    assert not kept_rows_apply(trained)
    half = copy.deepcopy(model)
    half.roi_heads.box_head.train()  # a submodule left in training mode
    assert not kept_rows_apply(half)
    hooked = copy.deepcopy(model)
    handle = hooked.roi_heads.box_head.fc7.register_forward_hook(lambda *a: None)
    assert not kept_rows_apply(hooked)
    handle.remove()
    assert kept_rows_apply(hooked)
    glob = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)  # sees every module's call
    try:
        assert not kept_rows_apply(model)
    finally:
        glob.remove()
    assert kept_rows_apply(model)

    class OwnHead(TwoMLPHead):
        """A user's box head (it might mix proposals)."""

    own = copy.deepcopy(model)
    own.roi_heads.box_head = OwnHead(own.roi_heads.box_head.fc6.in_features, 1024)
    assert not kept_rows_apply(own)
    assert not kept_rows_apply(torch.nn.Linear(2, 2))


def test_a_hook_inside_the_heads_sees_every_proposal_as_torchvision_calls_it():
    model = _detector("fasterrcnn_mobilenet_v3_large_fpn", 96)
    x = torch.rand(1, 3, 80, 96)
    seen: dict[str, list[int]] = {"ours": [], "theirs": []}
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    for key, m in (("ours", ours), ("theirs", theirs)):
        m.roi_heads.box_head.fc7.register_forward_hook(lambda mod, i, o, key=key: seen[key].append(o.shape[0]))
    with torch.no_grad():
        a, b = BatchedDetector(ours)(x), theirs(list(x.unbind(0)))
    assert seen["ours"] == seen["theirs"] and len(seen["ours"]) == 1 and seen["ours"][0] > 100
    for k in ("boxes", "labels", "scores"):
        assert torch.equal(a[0][k], b[0][k])


@pytest.mark.numerics
def test_an_image_without_detections_gives_empty_outputs_still_on_the_graph():
    from interpretorch import explain
    from interpretorch.core.targets import DetectionTarget

    model = _detector("fasterrcnn_mobilenet_v3_large_fpn", 96)
    model.roi_heads.score_thresh = 1.0  # no softmax score exceeds 1: nothing is kept
    x = torch.rand(1, 3, 80, 96)
    ours, theirs = BatchedDetector(model)(x)[0], model(list(x.unbind(0)))[0]
    assert ours["boxes"].shape == theirs["boxes"].shape == (0, 4) and len(ours["labels"]) == 0
    assert ours["scores"].requires_grad and theirs["scores"].requires_grad
    target = DetectionTarget(boxes=[10.0, 10.0, 40.0, 40.0], labels=1)
    a = explain(BatchedDetector(copy.deepcopy(model)), x, "gradient", target=target)
    b = explain(_Plain(copy.deepcopy(model)), x, "gradient", target=target)
    assert float(a.scores[0]) == float(b.scores[0]) == 0.0
    assert torch.equal(a.maps, torch.zeros_like(a.maps)) and torch.equal(b.maps, torch.zeros_like(b.maps))
