"""Explanations of the shipped tiny detector and segmenter point at the objects they explain (known boxes and masks).

The full measurement (50 scenes, six methods) is ``benchmarks/bench_scene_ground_truth.py`` (figures in
benchmarks/README.md); this test runs the first 10 of those scenes (5 for occlusion, ~10x slower) to stay fast.
"""
from __future__ import annotations

import pytest
import torch

from interpretorch.attribution.registry import explain_targets
from interpretorch.core.targets import DetectionTarget, SegmentationTarget
from interpretorch.data.synthetic import make_scene_set
from interpretorch.metrics.localisation import energy_pointing_game, pointing_game
from interpretorch.models import load_model

SEED = 1000  # the benchmark's stream: not used in training or validation


def _maps(e) -> torch.Tensor:
    return e.maps if e.maps.dim() == 3 else e.maps.abs().sum(1)


@pytest.fixture(scope="module")
def scenes():
    return make_scene_set(10, seed=SEED)


@pytest.mark.numerics
@pytest.mark.parametrize("method,n", [("gradcam", 10), ("gradient_x_input", 10), ("occlusion", 5)])
def test_each_detection_map_points_inside_its_object_and_not_at_the_others(scenes, method, n):
    det = load_model("tiny_detector")
    x = det.preprocess.normalize(scenes.images)
    hits, pairs = [], []
    for i in range(n):
        boxes, labels = scenes.boxes[i], scenes.labels[i]
        targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(boxes, labels)]
        maps = _maps(explain_targets(det.model, x[i], targets, method, layer=det.cam_layer if "cam" in method
                                     else None))
        assert maps.shape == (len(targets), 64, 64)
        hits += pointing_game(maps, boxes=boxes[:, None], tolerance=0).tolist()
        for a in range(len(targets)):
            for b in range(len(targets)):
                if a != b:
                    pairs.append(float(energy_pointing_game(maps[a:a + 1], boxes=boxes[a][None, None]))
                                 > float(energy_pointing_game(maps[a:a + 1], boxes=boxes[b][None, None])))
    assert len(hits) >= n and sum(hits) / len(hits) >= 0.9, (method, hits)
    assert len(pairs) >= 4 and sum(pairs) / len(pairs) >= 0.9, (method, pairs)


@pytest.mark.numerics
def test_one_detection_is_explained_the_same_alone_and_among_the_others(scenes):
    det = load_model("tiny_detector")
    i = next(k for k in range(len(scenes)) if len(scenes.boxes[k]) >= 2)
    x = det.preprocess.normalize(scenes.images[i])
    targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(scenes.boxes[i], scenes.labels[i])]
    together = explain_targets(det.model, x, targets, "gradcam", layer="backbone").maps
    alone = explain_targets(det.model, x, targets[1:2], "gradcam", layer="backbone").maps
    torch.testing.assert_close(together[1], alone[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[1], atol=1e-3)


@pytest.mark.numerics
def test_segmentation_region_maps_put_most_energy_inside_the_region(scenes):
    seg = load_model("tiny_segmenter")
    x = seg.preprocess.normalize(scenes.images)
    inside, share = [], []
    for i in range(len(scenes)):
        targets = [SegmentationTarget(category=int(c) + 1) for c in scenes.labels[i]]
        maps = _maps(explain_targets(seg.model, x[i], targets, "gradcam", layer=seg.cam_layer))
        inside += energy_pointing_game(maps, masks=scenes.masks[i]).tolist()
        share += scenes.masks[i].float().mean((1, 2)).tolist()
    inside, share = torch.tensor(inside), torch.tensor(share)
    assert float(inside.mean()) > 0.5, inside
    assert bool((inside > 3 * share).all()), (inside, share)  # every region well above its area's share
