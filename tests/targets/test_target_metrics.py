"""Metrics and sanity checks with target objects: per-box / per-region objects taken from the targets, per-region
deletion equal to the same region scored by a plain callable, and a randomised model scored against the trained
model's predicted region."""
from __future__ import annotations

import pytest
import torch

import interpretorch
from interpretorch.core.targets import DetectionTarget, SegmentationTarget
from interpretorch.metrics import evaluate
from interpretorch.metrics.localisation import energy_pointing_game, pointing_game
from interpretorch.sanity import model_randomization
from target_models import TinyDetector, TinySegmenter


def test_pointing_games_are_per_box_with_detection_targets():
    torch.manual_seed(0)
    det = TinyDetector(cell=4).eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = det(x)[0]
    targets = [DetectionTarget(index=j) for j in range(3)]
    exps = interpretorch.explain_targets(det, x[0], targets, ["gradient"])
    got = evaluate(det, x.expand(3, -1, -1, -1), exps, target=targets,
                   metrics=["pointing_game", "energy_pointing_game"])["gradient"]
    boxes = [out["boxes"][j:j + 1].detach() for j in range(3)]
    want_pg = pointing_game(exps["gradient"], boxes=boxes)
    want_e = energy_pointing_game(exps["gradient"], boxes=boxes)
    assert got["pointing_game"]["per_image"] == pytest.approx([float(v) for v in want_pg])
    assert got["energy_pointing_game"]["per_image"] == pytest.approx([float(v) for v in want_e])
    assert got["target"][1] == {"kind": "detection", "iou_threshold": 0.5, "match": "best", "index": 1}


@pytest.mark.numerics
def test_region_deletion_and_energy_with_segmentation_targets():
    torch.manual_seed(0)
    seg = TinySegmenter(out="dict").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        pred = seg(x)["out"].argmax(1) == 1
    exps = interpretorch.explain(seg, x, ["gradcam", "occlusion"], target=SegmentationTarget(1),
                                 options={"occlusion": {"window": 4}})
    got = evaluate(seg, x, exps, target=SegmentationTarget(1), metrics=["deletion", "energy_pointing_game"])

    for name in exps:
        # per-region deletion = deletion of a plain callable scoring the same fixed region, one image per call
        per_image = [evaluate(seg, x[i:i + 1], {name: _one(exps[name], i)},
                              target=lambda out, i=i: (out["out"][:, 1] * pred[i].float()).flatten(1).sum(1),
                              metrics=["deletion"])[name]["deletion"]["per_image"][0] for i in range(2)]
        assert got[name]["deletion"]["per_image"] == pytest.approx(per_image, rel=1e-5, abs=1e-5)
        want = energy_pointing_game(exps[name], masks=pred)
        assert got[name]["energy_pointing_game"]["per_image"] == pytest.approx([float(v) for v in want])


def _one(exp, i):
    from dataclasses import replace

    return replace(exp, maps=exp.maps[i:i + 1], raw=None, scores=None, outputs=None)


def test_sanity_scores_randomised_models_against_the_trained_region():
    torch.manual_seed(0)
    seg = TinySegmenter(out="tensor").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        pred = seg(x).argmax(1) == 2
    kw = dict(methods=["gradient"], max_steps=2, keep_maps=0)
    a = model_randomization(seg, x, target=SegmentationTarget(2), **kw)
    b = model_randomization(seg, x, target=[SegmentationTarget(2, pred[i]) for i in range(2)], **kw)
    for metric, vals in a.similarity["gradient"].items():
        assert torch.allclose(vals, b.similarity["gradient"][metric], atol=1e-6, equal_nan=True), metric
