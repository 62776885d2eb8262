"""K targets of one image from one forward pass (``explain_targets``' one-forward path): the maps, scores and fields
equal those of the K-row path (the image repeated as K rows of ``explain``), the model runs forward once, the rows
counted by progress are 1 + K and ``explain_targets_rows`` says so, and the model is left unchanged.

Tolerance of the map comparisons: rtol 1e-4 and atol 1e-5 x the largest |value| of the K-row maps (one row against
K rows of one batch: the convolutions may sum in another order)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import interpretorch
from interpretorch.attribution.registry import Geometry, explain_targets_rows, one_forward_plan
from interpretorch.core.progress import track
from interpretorch.core.targets import DetectionTarget, SegmentationTarget, check_target
from interpretorch.data.synthetic import make_scene_set
from interpretorch.models import load_model
from target_models import CountingDetector, TinyDetector, TinySegmenter

CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam"]
GRADIENTS = ["gradient", "gradient_x_input"]


def k_rows(model, image, targets, methods, layer, **kw):
    """Today's path: the image as K rows of one explain call."""
    x = image[None].expand(len(targets), *image.shape)
    return interpretorch.explain(model, x, methods, target=targets, layer=layer, **kw)


def assert_same(fast, slow):
    for m, e in slow.items():
        f = fast[m]
        assert f.maps.shape == e.maps.shape and f.method == e.method and f.layer == e.layer, m
        scale = float(e.maps.abs().max())
        assert scale > 0, m
        torch.testing.assert_close(f.maps, e.maps, rtol=1e-4, atol=1e-5 * scale, msg=m)
        torch.testing.assert_close(f.scores, e.scores, rtol=1e-5, atol=1e-6)
        assert (f.raw is None) == (e.raw is None)
        if e.raw is not None:
            torch.testing.assert_close(f.raw, e.raw, rtol=1e-4, atol=1e-5 * float(e.raw.abs().max()), msg=m)
        assert (f.target is None) == (e.target is None)
        if e.target is not None:
            assert torch.equal(f.target, e.target)
        assert f.extras == e.extras, m
        assert (f.outputs is None) == (e.outputs is None)
        if e.outputs is not None:
            torch.testing.assert_close(f.outputs, e.outputs, rtol=1e-5, atol=1e-6)


@pytest.mark.numerics
def test_shipped_detector_maps_equal_the_k_row_path():
    det = load_model("tiny_detector")
    scenes = make_scene_set(4, seed=1000)
    i = max(range(4), key=lambda k: len(scenes.boxes[k]))
    x = det.preprocess.normalize(scenes.images[i])
    targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(scenes.boxes[i], scenes.labels[i])]
    assert len(targets) >= 2
    fast = interpretorch.explain_targets(det.model, x, targets, CAMS, layer=det.cam_layer)
    assert_same(fast, k_rows(det.model, x, targets, CAMS, det.cam_layer))
    fast = interpretorch.explain_targets(det.model, x, targets, GRADIENTS)
    assert_same(fast, k_rows(det.model, x, targets, GRADIENTS, None))


@pytest.mark.numerics
def test_index_and_box_targets_of_a_detector_equal_the_k_row_path(snapshot):
    torch.manual_seed(0)
    det = TinyDetector().eval()
    snap = snapshot(det)
    x = torch.randn(3, 16, 16)
    x0 = x.clone()
    with torch.no_grad():
        out = det(x[None])[0]
    # reference boxes half a pixel off the predicted ones (IoU = 1 is a kink, see test_target_objects)
    for targets in ([DetectionTarget(index=j) for j in range(4)],
                    [DetectionTarget(boxes=out["boxes"][j] + 0.5, labels=int(out["labels"][j])) for j in range(4)]):
        fast = interpretorch.explain_targets(det, x, targets, CAMS + GRADIENTS, layer="backbone", relu=False)
        assert_same(fast, k_rows(det, x, targets, CAMS + GRADIENTS, "backbone", relu=False))
        assert fast["gradcam"].target is None and fast["gradcam"].extras["target_kind"] == "detection"
        assert len(fast["gradcam"].extras["targets"]) == 4
    snap.assert_unchanged()
    assert torch.equal(x, x0)


@pytest.mark.numerics
@pytest.mark.parametrize("out", ["dict", "tensor"])
def test_segmenter_region_maps_equal_the_k_row_path(out):
    torch.manual_seed(1)
    seg = TinySegmenter(out=out).eval()
    x = torch.randn(3, 16, 16)
    masks = torch.rand(3, 16, 16) > 0.6
    targets = [SegmentationTarget(category=c, mask=masks[c]) for c in range(3)]
    fast = interpretorch.explain_targets(seg, x, targets, CAMS + GRADIENTS, layer="backbone", relu=False)
    assert_same(fast, k_rows(seg, x, targets, CAMS + GRADIENTS, "backbone", relu=False))
    # options of one method make it a pass of its own; shared options reach the methods that take them
    fast = interpretorch.explain_targets(seg, x, targets, ["gradcam", "gradient"], layer="backbone",
                                         options={"gradcam": {"normalize": True}}, abs=True)
    slow = k_rows(seg, x, targets, ["gradcam", "gradient"], "backbone", options={"gradcam": {"normalize": True}},
                  abs=True)
    assert_same(fast, slow)


@pytest.mark.numerics
def test_class_targets_of_a_classifier_equal_the_k_row_path():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)).eval()
    x = torch.randn(3, 12, 12)
    targets = [4, 0, 2]
    fast = interpretorch.explain_targets(net, x, targets, CAMS + GRADIENTS + ["cam"], layer="3")
    assert_same(fast, k_rows(net, x, targets, CAMS + GRADIENTS + ["cam"], "3"))
    assert fast["gradcam"].target.tolist() == targets


def test_one_forward_of_one_row_and_rows_counted_as_the_estimate_says():
    torch.manual_seed(0)
    det = CountingDetector().eval()
    CountingDetector.calls.clear()
    x = torch.randn(3, 16, 16)
    targets = [DetectionTarget(index=j) for j in range(4)]
    for methods, rows in ((["gradcam", "hirescam"], 1 + 4), (["eigencam"], 1), (["gradcam", "gradient"], 2 * (1 + 4)),
                          (["gradcam", "integrated_gradients"], None)):
        CountingDetector.calls.clear()
        with track() as progress:
            interpretorch.explain_targets(det, x, targets, methods, layer="backbone", batch_size=8,
                                          options={"integrated_gradients": {"steps": 2}}
                                          if "integrated_gradients" in methods else None)
        expected = explain_targets_rows(methods, targets, Geometry(1, 16, 16, 8),
                                        {"integrated_gradients": {"steps": 2}}
                                        if "integrated_gradients" in methods else None)
        assert progress.done == expected, methods
        if rows is not None:
            assert expected == rows
            assert CountingDetector.calls == [1] * (len(methods) if "gradient" in methods else 1), methods


def test_plan_keeps_callable_targets_and_other_methods_on_k_rows():
    bound = check_target([DetectionTarget(index=0), DetectionTarget(index=1)], 2)
    passes, rest = one_forward_plan(["gradcam", "eigencam", "gradient", "occlusion"], bound, {})
    assert [members for _, members in passes] == [["gradcam", "eigencam"], ["gradient"]]
    assert rest == ["occlusion"]
    passes, rest = one_forward_plan(["gradcam"], lambda out: out[:, 0], {})
    assert passes == [] and rest == ["gradcam"]
