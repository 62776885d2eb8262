"""The seeded multi-object scenes and the shipped tiny detector and segmenter trained on them."""
from __future__ import annotations

import hashlib

import pytest
import torch

from interpretorch.data.synthetic import SHAPES, make_scene_set
from interpretorch.models import MODELS, load_model
from interpretorch.models.scene_models import (PREPROCESS, SHA256, DetectorConfig, SegmenterConfig, box_iou,
                                               detection_ap, load_tiny_detector, mean_iou, train_tiny_detector,
                                               train_tiny_segmenter)


@pytest.fixture(scope="module")
def scenes():
    return make_scene_set(60, seed=123)  # a stream the shipped models were not trained or validated on


def test_scenes_are_seeded_and_do_not_depend_on_how_many_are_asked_for():
    a = make_scene_set(5, seed=3)
    b = make_scene_set(8, seed=3)
    c = make_scene_set(3, seed=3, start=2)
    assert torch.equal(a.images, b.images[:5]) and torch.equal(a.images[2:], c.images)
    assert all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert not torch.equal(a.images, make_scene_set(5, seed=4).images)


def test_scene_objects_are_disjoint_distinct_and_inside_their_boxes(scenes):
    counts = {len(b) for b in scenes.boxes}
    assert counts == {1, 2, 3}
    for boxes, labels, masks in zip(scenes.boxes, scenes.labels, scenes.masks):
        assert len(set(labels.tolist())) == len(labels)  # distinct classes
        iou = box_iou(boxes, boxes) - torch.eye(len(boxes))
        assert float(iou.max()) == 0.0  # boxes do not overlap
        for (x0, y0, x1, y1), m in zip(boxes.long().tolist(), masks):
            inside = torch.zeros_like(m)
            inside[y0:y1, x0:x1] = True
            assert m.any() and not (m & ~inside).any()
            assert m[y0:y1, x0:x1].any(0).all() and m[y0:y1, x0:x1].any(1).all()  # the box is tight
    sem = scenes.semantic
    for i in range(len(scenes)):
        for k, m in enumerate(scenes.masks[i]):
            assert (sem[i][m] == scenes.labels[i][k] + 1).all()
        assert (sem[i][~scenes.masks[i].any(0)] == 0).all()


def test_scene_set_refuses_bad_arguments():
    with pytest.raises(ValueError, match="max_objects"):
        make_scene_set(2, max_objects=5)
    with pytest.raises(ValueError, match="size"):
        make_scene_set(2, size=16)
    with pytest.raises(ValueError, match="n must be"):
        make_scene_set(0)


def test_shipped_detector_finds_the_objects_of_held_out_scenes(scenes):
    loaded = load_model("tiny_detector")
    assert "tiny_detector" in MODELS and loaded.class_names == list(SHAPES)
    ap = detection_ap(loaded.model, scenes)
    assert ap >= 0.95, ap
    out = loaded.model(PREPROCESS.normalize(scenes.images[:4]))
    assert isinstance(out, list) and len(out) == 4
    assert set(out[0]) == {"boxes", "labels", "scores"} and out[0]["boxes"].shape[1] == 4


def test_detector_scores_are_differentiable_and_the_cam_layer_is_found_by_default(scenes):
    from interpretorch.capture import default_cam_layer

    loaded = load_model("tiny_detector")
    x = PREPROCESS.normalize(scenes.images[:2]).requires_grad_(True)
    out = loaded.model(x)
    out[0]["scores"].sum().backward()
    assert x.grad is not None and x.grad[0].abs().sum() > 0 and x.grad[1].abs().sum() == 0
    assert default_cam_layer(loaded.model, x.detach()) == loaded.cam_layer == "backbone"


def test_shipped_segmenter_segments_held_out_scenes(scenes):
    loaded = load_model("tiny_segmenter")
    assert loaded.class_names[0] == "background" and loaded.class_names[1:] == list(SHAPES)
    out = loaded.model(PREPROCESS.normalize(scenes.images[:2]))
    assert set(out) == {"out"} and out["out"].shape == (2, 5, 64, 64)
    miou = mean_iou(loaded.model, scenes)
    assert miou >= 0.85, miou


def test_packaged_weights_are_checked_by_sha256(tmp_path):
    from importlib import resources

    src = resources.files("interpretorch.models").joinpath("weights/tiny_detector.pt").read_bytes()
    assert hashlib.sha256(src).hexdigest() == SHA256["tiny_detector"]
    bad = tmp_path / "d.pt"
    bad.write_bytes(src[:-1] + bytes([src[-1] ^ 1]))
    with pytest.raises(ValueError, match="sha256"):
        load_tiny_detector(bad, sha256=SHA256["tiny_detector"])


def test_training_is_seeded():
    cfg = DetectorConfig(n_train=32, n_val=8, epochs=1, batch_size=16)
    (a, _), (b, _) = train_tiny_detector(cfg), train_tiny_detector(cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    scfg = SegmenterConfig(n_train=16, n_val=4, epochs=1, batch_size=16)
    (c, _), (d, _) = train_tiny_segmenter(scfg), train_tiny_segmenter(scfg)
    assert all(torch.equal(p, q) for p, q in zip(c.state_dict().values(), d.state_dict().values()))
