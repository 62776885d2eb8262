"""`interpretorch explain --task`: one row per detection (its box drawn), per class region, or per image compared
with a reference; the task inferred from the model's output when not given."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.run import task_rows
from target_models import detector


def _images(tmp_path: Path, n: int = 2) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


def _results(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    html = (out / "index.html").read_text()
    assert results["headline"] and results["headline"].split(";")[0] in html  # the answer block comes first
    return results


def test_detection_task_explains_every_detection_above_the_threshold(tmp_path):
    imgs = _images(tmp_path)
    out = tmp_path / "rep"
    assert main(["explain", *imgs, "--model", "target_models:detector", "--size", "32", "--methods",
                 "gradcam,gradient", "--layer", "backbone", "--score-threshold", "0.5", "--out", str(out)]) == 0
    r = _results(out)
    assert r["task"]["task"] == "detection"  # inferred from the list of dicts
    rows = r["task"]["rows"]
    assert len(r["images"]) == len(rows) == r["task"]["n_rows"] > 0
    for img, row in zip(r["images"], rows):
        assert img["explains"] == row and row["score"] >= 0.5
        assert img["methods"]["gradcam"]["target"]["kind"] == "detection"
        assert img["methods"]["gradcam"]["target"]["boxes"][0] == pytest.approx(row["box"], abs=0.06)
    assert f"{len(rows)} detection(s) with score" in r["headline"]
    html = (out / "index.html").read_text()
    assert f"{rows[0]['label_name']} {rows[0]['score']:.2f}" in html  # each row's caption names its detection


def test_task_rows_draws_boxes_and_counts(tmp_path):
    torch.manual_seed(0)
    det = detector()
    x = torch.rand(2, 3, 32, 32)
    rows = task_rows(det, x, "detection", display=x.clone(), names=["a", "b"], score_threshold=0.0)
    with torch.no_grad():
        out = det(x)
    assert len(rows.rows) == sum(len(o["scores"]) for o in out) == rows.inputs.shape[0]
    assert rows.display.shape == rows.inputs.shape and not torch.equal(rows.display[0], x[0])  # box drawn
    with pytest.raises(ValueError, match="no detection with score >= 2"):
        task_rows(det, x, "detection", score_threshold=2.0)


def test_segmentation_task_one_row_per_class_region(tmp_path):
    imgs = _images(tmp_path, 1)
    out = tmp_path / "rep"
    assert main(["explain", *imgs, "--model", "target_models:segmenter", "--size", "32", "--methods", "gradcam",
                 "--task", "segmentation", "--classes", "0,1,2", "--out", str(out)]) == 0
    r = _results(out)
    rows = r["task"]["rows"]
    assert {row["class"] for row in rows} | {a["class"] for a in r["task"]["classes_not_predicted"]} == {0, 1, 2}
    assert all(img["methods"]["gradcam"]["target"]["kind"] == "segmentation" for img in r["images"])
    assert f"{len(rows)} predicted class region(s)" in r["headline"]


def test_similarity_task_needs_a_reference_and_explains_each_image(tmp_path):
    imgs = _images(tmp_path, 2)
    out = tmp_path / "rep"
    assert main(["explain", *imgs, "--model", "target_models:embedder", "--size", "32", "--methods", "gradient",
                 "--reference", imgs[0], "--out", str(out)]) == 0
    r = _results(out)
    assert r["task"]["task"] == "similarity"
    assert r["task"]["rows"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)  # the reference itself
    assert main(["explain", *imgs, "--model", "target_models:embedder", "--size", "32", "--task", "similarity",
                 "--out", str(out)]) == 2


def test_task_with_target_is_a_one_line_error(tmp_path, capsys):
    imgs = _images(tmp_path, 1)
    assert main(["explain", *imgs, "--model", "target_models:detector", "--size", "32", "--target", "3",
                 "--score-threshold", "0", "--out", str(tmp_path / "rep")]) == 2
    assert "--target and --topk are for classifiers" in capsys.readouterr().err
    assert main(["explain", "--data", str(tmp_path), "--model", "target_models:embedder", "--task", "similarity",
                 "--out", str(tmp_path / "rep")]) == 2  # detection and segmentation run on datasets (tests/datasets)
    assert "--task similarity cannot run on a dataset" in capsys.readouterr().err


def test_methods_listing_says_which_targets_each_method_explains(capsys):
    assert main(["methods", "cam", "gradcam"]) == 0
    out = capsys.readouterr().out
    assert "targets: class; not callable, detection" in out and "targets: every kind" in out


def test_evaluate_task_scores_each_detection_in_its_own_box(tmp_path):
    imgs = _images(tmp_path, 1)
    out = tmp_path / "rep"
    assert main(["evaluate", *imgs, "--model", "target_models:detector", "--size", "32", "--methods", "gradient",
                 "--score-threshold", "0.5", "--metrics", "pointing_game,energy_pointing_game,deletion",
                 "--out", str(out)]) == 0
    r = _results(out)
    ev = r["evaluation"]["gradient"]
    n = len(r["task"]["rows"])
    assert len(ev["pointing_game"]["per_image"]) == len(ev["energy_pointing_game"]["per_image"]) == n
    assert all(0.0 <= v <= 1.0 for v in ev["energy_pointing_game"]["per_image"])
    assert ev["target"][0]["kind"] == "detection"
