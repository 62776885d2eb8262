"""``evaluate --data DIR --task detection|segmentation`` on a generated scene set with the shipped tiny detector and
segmenter: every detection / class region is one row routed to its image, its pointing game and energy are those
of its own map against its true object (recomputed here from ``explain_targets`` and the metrics), and the page
gives n and intervals over the targets."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interpretorch.attribution.registry import explain_targets
from interpretorch.cli import main
from interpretorch.core.target_objects import DetectionTarget, SegmentationTarget, box_iou
from interpretorch.data.synthetic import make_scene_set, save_scene_set
from interpretorch.datasets import read_rows
from interpretorch.datasets.streams import ImageStream, open_images
from interpretorch.datasets.tasks import UNIT
from interpretorch.metrics.localisation import energy_pointing_game, pointing_game
from interpretorch.models import load_model

COMMON = ["--methods", "gradcam", "--option", "deletion.step=0.25", "--batch-size", "8"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    save_scene_set(make_scene_set(3, seed=11), root)
    return root


@pytest.fixture(scope="module")
def detector():
    return load_model("tiny_detector")


@pytest.fixture(scope="module")
def segmenter():
    return load_model("tiny_segmenter")


def _images(root, loaded):
    data = open_images(root)
    stream = ImageStream(data, loaded.preprocess)
    items = [stream[i] for i in range(len(data))]
    return data, [loaded.preprocess.normalize(it["image"][None]) for it in items], items


def _by_unit(rows, col, method="gradcam"):
    return {u: v for u, m, v in zip(rows["unit"], rows["method"], rows[col]) if m == method and u is not None}


def test_detection_rows_are_each_detections_own_map_against_its_true_box(tmp_path, scene_dir, detector):
    out = tmp_path / "det"
    assert main(["evaluate", "--model", "tiny_detector", "--task", "detection", "--data", str(scene_dir),
                 "--out", str(out), *COMMON]) == 0
    rows = read_rows(out)
    data, xs, items = _images(scene_dir, detector)
    names = list(detector.class_names)
    expected_pg, expected_energy, expected_iou = {}, {}, {}
    for i, (x, item) in enumerate(zip(xs, items)):
        with torch.no_grad():
            det = detector.model(x)[0]
        keep = [j for j in range(len(det["scores"])) if float(det["scores"][j]) >= 0.5]
        targets = [DetectionTarget(boxes=det["boxes"][j], labels=int(det["labels"][j])) for j in keep]
        maps = explain_targets(detector.model, x, targets, "gradcam", layer=detector.cam_layer).maps
        truth = item["objects"]["boxes"]
        labels = [names.index(o) for o in data.annotations[data.records[i].path].labels]
        for k, j in enumerate(keep):
            same = [t for t, lab in enumerate(labels) if lab == int(det["labels"][j])]
            iou = box_iou(det["boxes"][j][None], truth[same])[0] if same else torch.zeros(0)
            best = int(iou.argmax()) if same else None
            expected_iou[i * UNIT + k] = None if best is None else float(iou[best])
            matched = best is not None and float(iou[best]) >= 0.5
            box = [truth[same[best]][None]] if matched else [torch.zeros(0, 4)]
            expected_pg[i * UNIT + k] = float(pointing_game(maps[k:k + 1], boxes=box)) if matched else None
            expected_energy[i * UNIT + k] = float(energy_pointing_game(maps[k:k + 1], boxes=box)) if matched else None
    got_pg = _by_unit(rows, "pointing_game")
    assert sorted(got_pg) == sorted(expected_pg) and len(expected_pg) >= 3  # one row per detection, per image
    for u in expected_pg:
        assert (got_pg[u] is None) == (expected_pg[u] is None)
        if expected_pg[u] is not None:
            assert got_pg[u] == pytest.approx(expected_pg[u], abs=1e-6)
            assert _by_unit(rows, "energy_pointing_game")[u] == pytest.approx(expected_energy[u], abs=1e-5)
            assert _by_unit(rows, "truth_iou")[u] == pytest.approx(expected_iou[u], abs=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["table"]["gradcam"]["energy_pointing_game"]
    values = [v for v in expected_energy.values() if v is not None]
    assert cell["n"] == len(values) == summary["task"]["matched"] >= 3
    assert cell["mean"] == pytest.approx(np.mean(values), abs=1e-5)
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert summary["images"] == summary["task"]["targets"] == len(expected_pg) and summary["unit"] == "detection(s)"
    page = (out / "index.html").read_text()
    assert "Each row explains one detection scoring at least 0.5" in page and "n = detection(s) with a value" in page
    assert "targets: each image" in page and "on the detections where both methods" in summary["test"]
    gallery = (out / "gallery" / "gradcam.html").read_text()
    assert "images/gradcam_" in gallery


def test_a_detection_of_no_true_objects_class_has_no_value(tmp_path, scene_dir):
    """Relabel image 0's objects as another class: its detections match no true box, so they get no pointing
    value, and the page says on how many detections each mean rests."""
    moved = tmp_path / "moved"
    moved.mkdir()
    doc = json.loads((scene_dir / "annotations.json").read_text())
    for o in doc["images"][0]["objects"]:
        o["label"] = "cross" if o["label"] != "cross" else "disk"
        o["box"] = [0, 0, 1, 1]  # and far away: no class matches
    for e in doc["images"]:
        e["file"], e["mask"] = "../" + scene_dir.name + "/" + e["file"], None
    (moved / "annotations.json").write_text(json.dumps(doc))
    # paths that leave the annotation file's folder are refused, so the copy lives beside the images
    assert main(["evaluate", "--model", "tiny_detector", "--task", "detection", "--data", str(moved),
                 "--out", str(tmp_path / "x"), *COMMON]) == 2
    doc["images"] = [{**e, "file": e["file"].split("/", 2)[2]} for e in doc["images"]]
    (scene_dir / "moved.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert main(["evaluate", "--model", "tiny_detector", "--task", "detection", "--data",
                 str(scene_dir / "moved.json"), "--out", str(out), *COMMON, "--metrics", "pointing_game"]) == 0
    rows = read_rows(out)
    pg = _by_unit(rows, "pointing_game")
    first = [u for u in pg if u < UNIT]
    assert first and all(pg[u] is None for u in first)
    assert all(pg[u] is not None for u in pg if u >= UNIT and _by_unit(rows, "truth_iou")[u] >= 0.5)
    summary = json.loads((out / "summary.json").read_text())
    n = summary["table"]["gradcam"]["pointing_game"]["n"]
    assert n == len(pg) - len(first) == summary["task"]["matched"]
    assert any(f["code"] == "undefined_values" and f["n"] == n for f in summary["flags"])


def test_segmentation_regions_against_their_true_pixels(tmp_path, scene_dir, segmenter):
    out = tmp_path / "seg"
    assert main(["evaluate", "--model", "tiny_segmenter", "--task", "segmentation", "--data", str(scene_dir),
                 "--out", str(out), *COMMON, "--metrics", "energy_pointing_game"]) == 0
    rows = read_rows(out)
    data, xs, items = _images(scene_dir, segmenter)
    names = list(segmenter.class_names)
    expected = {}
    for i, (x, item) in enumerate(zip(xs, items)):
        with torch.no_grad():
            pred = segmenter.model(x)["out"].argmax(1)[0]
        classes = [c for c in pred.unique().tolist() if c != 0]
        maps = explain_targets(segmenter.model, x, [SegmentationTarget(c) for c in classes], "gradcam",
                               layer=segmenter.cam_layer).maps
        labels = [names.index(o) for o in data.annotations[data.records[i].path].labels]
        inst = item["objects"]["instances"]
        for k, c in enumerate(classes):
            truth = torch.zeros_like(inst, dtype=torch.bool)
            for t, lab in enumerate(labels):
                if lab == c:
                    truth |= inst == t + 1
            v = float(energy_pointing_game(maps[k:k + 1], masks=truth[None]))
            expected[i * UNIT + k] = None if np.isnan(v) else v
    got = _by_unit(rows, "energy_pointing_game")
    assert sorted(got) == sorted(expected)
    for u, v in expected.items():
        assert (got[u] is None) == (v is None) and (v is None or got[u] == pytest.approx(v, abs=1e-5))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unit"] == "class region(s)" and summary["task"]["objects"] == "ground truth"
    assert summary["task"]["matched"] == summary["table"]["gradcam"]["energy_pointing_game"]["n"] \
        == sum(v is not None for v in expected.values())
    assert "Mean over class region(s)" in (out / "index.html").read_text()


def test_without_annotations_the_maps_are_scored_against_their_own_objects(tmp_path, scene_dir):
    plain = tmp_path / "plain"
    plain.mkdir()
    for p in (scene_dir / "images").iterdir():
        (plain / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "own"
    assert main(["evaluate", "--model", "tiny_detector", "--task", "detection", "--data", str(plain),
                 "--out", str(out), *COMMON, "--metrics", "pointing_game"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"]["objects"] == "own" and summary["task"]["matched"] is None
    assert summary["table"]["gradcam"]["pointing_game"]["n"] == summary["task"]["targets"]
    assert "not against a ground truth" in (out / "index.html").read_text()


def test_explain_data_task_saves_each_targets_map(tmp_path, scene_dir):
    out = tmp_path / "explain"
    assert main(["explain", "--model", "tiny_detector", "--task", "detection", "--data", str(scene_dir),
                 "--out", str(out), "--methods", "gradcam,gradient"]) == 0
    rows = read_rows(out)
    units = sorted({u for u in rows["unit"] if u is not None})
    from interpretorch.datasets.writer import load_maps

    maps = load_maps(out, "gradient", units)
    assert sorted(maps) == units and all(m.shape == (64, 64) for m in maps.values())
    assert not (out / "summary.json").exists()
    assert (out / "index.html").exists()


@pytest.mark.parametrize("args, message", [
    (["--task", "similarity"], "--task similarity cannot run on a dataset"),
    (["--task", "detection", "--classes", "disk"], "--classes is for --task segmentation"),
    (["--task", "segmentation", "--classes", "horse"], "--classes: "),
    (["--task", "detection", "--target", "1"], "leave out --target"),
    (["--task", "detection", "--metrics", "sensitivity_n"], "depend on which images are evaluated together"),
])
def test_task_runs_refuse_what_they_cannot_do(tmp_path, scene_dir, capsys, args, message):
    model = "tiny_segmenter" if "segmentation" in args else "tiny_detector"
    assert main(["evaluate", "--model", model, "--data", str(scene_dir), "--out", str(tmp_path / "o"),
                 "--methods", "gradcam", *args]) == 2
    assert message in capsys.readouterr().err


def test_labels_not_of_the_model_and_resume_with_other_settings(tmp_path, scene_dir, capsys):
    assert main(["evaluate", "--model", "tiny_cnn", "--task", "detection", "--data", str(scene_dir),
                 "--out", str(tmp_path / "o"), "--methods", "gradcam"]) == 2
    assert "images/scene_00000.png, object 0:" in capsys.readouterr().err
    out = tmp_path / "r"
    assert main(["explain", "--model", "tiny_detector", "--task", "detection", "--data", str(scene_dir),
                 "--out", str(out), "--methods", "gradient"]) == 0
    assert main(["explain", "--model", "tiny_detector", "--task", "detection", "--data", str(scene_dir),
                 "--out", str(out), "--methods", "gradient", "--resume", "--score-threshold", "0.8"]) == 2
    err = capsys.readouterr().err
    assert "is a run with other settings" in err and "'score_threshold': 0.5" in err and "0.8" in err
