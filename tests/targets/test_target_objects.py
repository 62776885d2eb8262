"""Target objects: hand-computed scores of each kind, routing of per-image targets through chunked and
perturbed rows, several targets of one image in one call, and class targets unchanged."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import interpretorch
from interpretorch.core.target_objects import box_iou, infer_task
from interpretorch.core.targets import (BoundTargets, ClassTarget, DetectionTarget, FunctionTarget, RegressionTarget,
                                        SegmentationTarget, SimilarityTarget, check_target, split_target,
                                        target_indices, target_scores)
from target_models import CountingDetector, HFOutput, TinyDetector, TinyEmbedder, TinyRegressor, TinySegmenter


def det_row(boxes, labels, scores, grad=False):
    b = torch.tensor(boxes, dtype=torch.float64, requires_grad=grad)
    s = torch.tensor(scores, dtype=torch.float64, requires_grad=grad)
    return {"boxes": b, "labels": torch.tensor(labels), "scores": s}


def test_box_iou_by_hand():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[50 / 150, 0.0, 1.0]]))


def test_detection_best_match_is_pytorch_grad_cams_rule():
    # reference box [0,0,10,10] label 1. Predicted: IoU 1/3 label 1, IoU 81/100 label 2 (best IoU, wrong label),
    # IoU 0.64 label 1 (matches by label, but not the best IoU).
    row = det_row([[5, 0, 15, 10], [0, 0, 9, 9], [0, 0, 8, 8]], [1, 2, 1], [0.9, 0.8, 0.7])
    t = DetectionTarget(boxes=[0, 0, 10, 10], labels=1)
    # best IoU is box 1 (0.81) whose label is 2: pytorch-grad-cam scores 0
    assert float(target_scores([row], t)) == 0.0
    t_all = DetectionTarget(boxes=[0, 0, 10, 10], labels=1, match="all")
    assert float(target_scores([row], t_all)) == pytest.approx(0.64 + 0.7)  # 1/3 is below 0.5
    t2 = DetectionTarget(boxes=[0, 0, 10, 10], labels=2)
    assert float(target_scores([row], t2)) == pytest.approx(0.81 + 0.8)
    # two reference boxes: summed
    t3 = DetectionTarget(boxes=[[0, 0, 10, 10], [5, 0, 15, 10]], labels=[2, 1])
    assert float(target_scores([row], t3)) == pytest.approx(0.81 + 0.8 + 1.0 + 0.9)


def test_detection_without_match_is_a_connected_zero():
    row = det_row([[50, 50, 60, 60]], [1], [0.9], grad=True)
    s = target_scores([row], DetectionTarget(boxes=[0, 0, 10, 10], labels=1))
    assert float(s.detach()) == 0.0 and s.requires_grad
    s.sum().backward()
    assert torch.equal(row["scores"].grad, torch.zeros(1))
    empty = {"boxes": torch.zeros(0, 4, requires_grad=True), "labels": torch.zeros(0, dtype=torch.long),
             "scores": torch.zeros(0, requires_grad=True)}
    s = target_scores([empty], DetectionTarget(boxes=[0, 0, 10, 10], labels=1))
    assert float(s.detach()) == 0.0 and s.requires_grad


def test_detection_index_reads_the_unperturbed_detection():
    clean = [det_row([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2], [0.9, 0.6])]
    t = check_target(DetectionTarget(index=1), 1)
    ids = target_indices(clean, t)
    assert ids.tolist() == [0]
    assert float(target_scores(clean, t, ids)) == pytest.approx(1.0 + 0.6)
    # a perturbed row where the boxes moved and swapped order: matched by box, not by position
    moved = [det_row([[21, 21, 30, 30], [0, 0, 10, 10]], [2, 1], [0.5, 0.4])]
    assert float(target_scores(moved, t, ids)) == pytest.approx(81 / 100 + 0.5)
    with pytest.raises(ValueError, match="out of range: the image has 2 detections"):
        target_indices(clean, check_target(DetectionTarget(index=5), 1))


def test_segmentation_sum_mean_and_predicted_mask():
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 1, :2, :2] = 5.0  # class 1 predicted on the top-left 2 x 2
    logits[0, 1, 3, 3] = -1.0
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[3, :] = True
    assert float(target_scores(logits, SegmentationTarget(1, mask))) == -1.0
    assert float(target_scores(logits, SegmentationTarget(1, mask, reduce="mean"))) == -0.25
    assert float(target_scores({"out": logits}, SegmentationTarget(1))) == 20.0  # predicted mask: 4 pixels of 5
    assert float(target_scores(HFOutput(logits=logits), SegmentationTarget(1, reduce="mean"))) == 5.0
    # a mask at twice the logits' resolution (SegFormer's logits are at 1/4): resized to the logits by area
    big = mask.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert float(target_scores(logits, SegmentationTarget(1, big))) == -1.0


@pytest.mark.numerics
@pytest.mark.parametrize("method,opts", [("occlusion", {"window": 4}), ("rise", {"n_masks": 6}), ("scorecam", {}),
                                         ("groupcam", {"groups": 2}), ("feature_ablation", {}),
                                         ("lime", {"n_samples": 6}), ("integrated_gradients", {"steps": 3}),
                                         ("smoothgrad", {"n_samples": 2}), ("deeplift", {}),
                                         ("meaningful_perturbation", {"iterations": 2}), ("sess", {"window": 12})])
def test_segmentation_default_mask_comes_from_the_unperturbed_image(method, opts):
    """Perturbed rows are scored over the class's region predicted on the unperturbed image: the same maps as
    that region given as the mask."""
    torch.manual_seed(0)
    seg = TinySegmenter(out="tensor").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        pred = seg(x).argmax(1) == 1
    given = [SegmentationTarget(1, pred[i]) for i in range(2)]
    a = interpretorch.explain(seg, x, method, target=SegmentationTarget(1), batch_size=3, **opts)
    b = interpretorch.explain(seg, x, method, target=given, batch_size=3, **opts)
    assert torch.allclose(a.maps, b.maps, atol=1e-5), method


def test_similarity_and_regression_scores():
    torch.manual_seed(0)
    emb = TinyEmbedder().eval()
    x = torch.randn(3, 3, 16, 16)
    t = SimilarityTarget.from_image(emb, x[1])
    with torch.no_grad():
        s = target_scores(emb(x), t)
        e = emb(x)
    assert float(s[1]) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(s, F.cosine_similarity(e, e[1:2]), atol=1e-6)
    hf = TinyEmbedder(out="hf").eval()
    with torch.no_grad():
        assert torch.allclose(target_scores(hf(x), t), s, atol=1e-6)
    reg = TinyRegressor().eval()
    with torch.no_grad():
        out = reg(x)
    assert torch.equal(target_scores(out, RegressionTarget(1)), out[:, 1])
    f = FunctionTarget(lambda o, r: o[r].square().sum())
    assert torch.allclose(target_scores(out, f), out.square().sum(1))


def test_class_target_is_the_int_target():
    torch.manual_seed(0)
    reg = TinyRegressor(outputs=4).eval()
    x = torch.randn(3, 3, 16, 16)
    for method in ("gradcam", "gradient", "occlusion"):
        a = interpretorch.explain(reg, x, method, target=2)
        b = interpretorch.explain(reg, x, method, target=ClassTarget(2))
        c = interpretorch.explain(reg, x, method, target=[ClassTarget(2)] * 3)
        assert torch.equal(a.maps, b.maps) and torch.equal(a.maps, c.maps)
        assert torch.equal(a.target, b.target)
    assert check_target(ClassTarget([1, 0, 2]), 3).tolist() == [1, 0, 2]


@pytest.mark.numerics
@pytest.mark.parametrize("method,opts", [("gradcam", {}), ("gradient", {}), ("occlusion", {"window": 4}),
                                         ("integrated_gradients", {"steps": 3}), ("rise", {"n_masks": 6}),
                                         ("smoothgrad", {"n_samples": 2}), ("scorecam", {})])
def test_per_image_targets_are_routed_to_their_images_rows(method, opts):
    """Each image's map with its own target equals the map of that image alone: per-image targets score the rows
    built from their image, however rows are chunked (batch_size 3 cuts across images)."""
    torch.manual_seed(0)
    det = TinyDetector().eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        out = det(x)
    # reference boxes half a pixel off the predicted ones: IoU = 1 is a kink of IoU (min / max ties), where
    # last-bit differences between batch sizes would change the gradient
    targets = [DetectionTarget(boxes=out[i]["boxes"][i % 2] + 0.5, labels=int(out[i]["labels"][i % 2]))
               for i in range(3)]
    together = interpretorch.explain(det, x, method, target=targets, batch_size=3, **opts)
    for i in range(3):
        alone = interpretorch.explain(det, x[i:i + 1], method, target=targets[i], batch_size=3, **opts)
        assert torch.allclose(together.maps[i], alone.maps[0], atol=1e-5, rtol=1e-4), (method, i)
    assert together.target is None
    assert together.extras["target_kind"] == "detection" and len(together.extras["targets"]) == 3


@pytest.mark.numerics
def test_explain_targets_gives_each_targets_own_map():
    torch.manual_seed(0)
    det = TinyDetector().eval()
    x = torch.randn(1, 3, 16, 16)
    targets = [DetectionTarget(index=j) for j in range(4)]
    maps = interpretorch.explain_targets(det, x[0], targets, "gradcam", layer="backbone", relu=False)
    assert maps.maps.shape == (4, 16, 16)
    for j, t in enumerate(targets):
        one = interpretorch.explain(det, x, "gradcam", target=t, layer="backbone", relu=False)
        assert torch.allclose(maps.maps[j], one.maps[0], atol=1e-5)
    assert not torch.allclose(maps.maps[0], maps.maps[1])
    with pytest.raises(ValueError, match="one image"):
        interpretorch.explain_targets(det, torch.randn(2, 3, 16, 16), targets)


def test_binding_errors_and_views():
    t = check_target([SegmentationTarget(0), SegmentationTarget(1)], 2)
    assert isinstance(t, BoundTargets) and len(t) == 2
    assert split_target(t, slice(1, 2)).images.tolist() == [1]
    assert split_target(t, torch.tensor([1, 1, 0])).images.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="got 3 targets for 2 images"):
        check_target([SegmentationTarget(0)] * 3, 2)
    with pytest.raises(ValueError, match="one kind"):
        check_target([SegmentationTarget(0), RegressionTarget(0)], 2)
    with pytest.raises(ValueError, match="exactly one of the two"):
        DetectionTarget()
    with pytest.raises(ValueError, match="must split the target"):
        target_indices(torch.zeros(1, 3), check_target(RegressionTarget(0), 2))
    with pytest.raises(TypeError, match="one dict per image"):
        target_scores(torch.zeros(2, 3), DetectionTarget(index=0))


def test_infer_task():
    assert infer_task([{"boxes": torch.zeros(0, 4)}]) == "detection"
    assert infer_task(torch.zeros(1, 3, 4, 4)) == "segmentation"
    assert infer_task({"out": torch.zeros(1, 3, 4, 4)}) == "segmentation"
    assert infer_task(HFOutput(logits=torch.zeros(1, 3, 4, 4))) == "segmentation"
    assert infer_task(HFOutput(pooler_output=torch.zeros(1, 8))) == "similarity"
    assert infer_task(torch.zeros(1, 8), reference=True) == "similarity"
    assert infer_task(torch.zeros(1, 8)) == "class"


def test_model_unchanged_with_target_objects(snapshot):
    torch.manual_seed(0)
    seg = TinySegmenter(out="dict").eval()
    snap = snapshot(seg)
    x = torch.randn(2, 3, 16, 16)
    x0 = x.clone()
    interpretorch.explain(seg, x, ["gradcam", "gradient", "occlusion"], target=SegmentationTarget(2))
    snap.assert_unchanged()
    assert torch.equal(x, x0)


def test_explain_targets_costs_one_pass_for_k_targets():
    """K targets of one image: one forward of the one image for a CAM (then one backward per target to the layer:
    tests/targets/test_multi_target.py), where a loop over the targets makes K forward calls."""

    torch.manual_seed(0)
    det = CountingDetector().eval()
    CountingDetector.calls.clear()
    x = torch.randn(3, 16, 16)
    targets = [DetectionTarget(index=j) for j in range(4)]
    interpretorch.explain_targets(det, x, targets, "gradcam", layer="backbone", batch_size=8)
    assert CountingDetector.calls == [1]
    CountingDetector.calls.clear()
    interpretorch.explain_targets(det, x, targets, "gradcam", layer="backbone", batch_size=2)
    assert CountingDetector.calls == [1]
    CountingDetector.calls.clear()  # a method without a one-forward pass still puts the image through as K rows
    interpretorch.explain_targets(det, x, targets, "occlusion", batch_size=64, window=8, stride=8)
    assert CountingDetector.calls[0] == 4
