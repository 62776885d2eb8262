"""A task run's statistics respect that an image's targets share it: intervals resample images (the cluster
bootstrap), paired tests compare one mean per image, and the page says so with n targets in m images; a
classifier run (one row per image) keeps the plain bootstrap and per-image tests. Also the gallery outlines a
class region as it draws a detection's box, and a detection's score is not repeated as ``pred_prob``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.core.stats import bootstrap_ci, cluster_bootstrap_ci, paired_test
from interpretorch.core.target_objects import segmentation_logits
from interpretorch.datasets import read_rows
from interpretorch.datasets.streams import ImageStream, open_images
from interpretorch.datasets.summary import summarize
from interpretorch.datasets.tasks import UNIT
from interpretorch.imageops import draw_outline
from interpretorch.models import load_model
from test_task_dataset_runs import COMMON, scene_dir  # noqa: F401  (the 3-image scene set of the task-run tests)


def _table(clustered: bool):
    """Two methods on 4 images holding 3, 1, 2 and 1 targets; method b = a + the image's own shift."""
    sizes = [3, 1, 2, 1]
    rng = np.random.default_rng(4)
    shift = [0.3, -0.1, 0.2, 0.05]
    rows = {"image": [], "cluster": [], "method": [], "error": [], "path": [], "energy_pointing_game": []}
    for img, k in enumerate(sizes):
        a = rng.uniform(0.2, 0.8, size=k)
        for j in range(k):
            for m, v in (("a", a[j]), ("b", a[j] + shift[img] + 0.01 * j)):
                rows["image"].append(img * UNIT + j if clustered else img * 10 + j)
                rows["cluster"].append(img)
                rows["method"].append(m)
                rows["error"].append(None)
                rows["path"].append(f"{img}.png")
                rows["energy_pointing_game"].append(float(v))
    return rows


def test_summary_resamples_and_pairs_by_image():
    t = _table(True)
    s = summarize(t, ["a", "b"], ["energy_pointing_game"], n_resamples=2000, seed=3, unit="detection(s)",
                  cluster="cluster")
    vals = {m: [v for mm, v in zip(t["method"], t["energy_pointing_game"]) if mm == m] for m in "ab"}
    groups = [c for c, m in zip(t["cluster"], t["method"]) if m == "a"]
    cell = s["table"]["a"]["energy_pointing_game"]
    assert (cell["n"], cell["clusters"]) == (7, 4) and s["clusters"]["n"] == 4
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
        cluster_bootstrap_ci(vals["a"], groups, n_resamples=2000, seed=3), abs=1e-12)
    assert cell["mean"] == pytest.approx(np.mean(vals["a"]))  # the table's mean still weighs targets
    per_image = {m: [np.mean([v for v, c in zip(vals[m], groups) if c == img]) for img in range(4)] for m in "ab"}
    r = s["paired"]["energy_pointing_game"][0]
    ref = paired_test(per_image["a"], per_image["b"])
    assert (r["n"], r["targets"]) == (4, 7)
    assert r["mean_difference"] == pytest.approx(np.mean(np.subtract(per_image["a"], per_image["b"])), abs=1e-12)
    assert r["p_value"] == pytest.approx(ref["p_value"]) and r["effect_size"] == pytest.approx(ref["effect_size"])
    assert r["p_value_corrected"] == pytest.approx(ref["p_value"])  # Holm over one test
    assert s["bootstrap"]["method"] == "cluster percentile" and "one value per image" in s["test"]
    assert s["headline"].startswith("On 7 detection(s) in 4 image(s)")


def test_classifier_summary_is_unchanged():
    """Without ``cluster`` every row is its own unit: the plain bootstrap, per-row pairs, no cluster fields."""
    t = _table(False)
    s = summarize(t, ["a", "b"], ["energy_pointing_game"], n_resamples=2000, seed=3)
    vals = [v for m, v in zip(t["method"], t["energy_pointing_game"]) if m == "a"]
    cell = s["table"]["a"]["energy_pointing_game"]
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(bootstrap_ci(vals, n_resamples=2000, seed=3))
    assert "clusters" not in cell and "clusters" not in s and s["bootstrap"]["method"] == "percentile"
    assert s["paired"]["energy_pointing_game"][0]["n"] == 7 and "targets" not in s["paired"]["energy_pointing_game"][0]
    with pytest.raises(ValueError, match="no column 'image_of'"):
        summarize(t, ["a", "b"], ["energy_pointing_game"], cluster="image_of")


def test_detection_page_states_the_clustering(tmp_path, scene_dir):  # noqa: F811
    out = tmp_path / "det"
    assert main(["evaluate", "--model", "tiny_detector", "--task", "detection", "--data", str(scene_dir),
                 "--out", str(out), *COMMON, "--methods", "gradcam,gradient", "--metrics",
                 "pointing_game,energy_pointing_game"]) == 0
    rows = read_rows(out)
    summary = json.loads((out / "summary.json").read_text())
    targets = summary["task"]["targets"]
    images = {u // UNIT for u in rows["unit"] if u is not None}
    assert summary["clusters"]["n"] == len(images) == 3 and targets > len(images)  # several detections an image
    units = [(u, v) for u, m, v in zip(rows["unit"], rows["method"], rows["energy_pointing_game"])
             if m == "gradcam" and u is not None and v is not None]
    cell = summary["table"]["gradcam"]["energy_pointing_game"]
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
        cluster_bootstrap_ci([v for _, v in units], [u // UNIT for u, _ in units], seed=0))
    r = summary["paired"]["energy_pointing_game"][0]
    assert r["n"] == 3 and r["targets"] == len(units)
    page = (out / "index.html").read_text()
    assert f"n counts detection(s): {targets} in 3 image(s)" in page
    assert "the intervals resample whole images" in page and "the paired tests compare one mean per image" in page
    assert "treat them as independent" not in page and f"n={cell['n']} in 3 img" in page
    assert f"<td>3 ({len(units)})</td>" in page and "n images (detection(s))" in page
    task_rows = [i for i, u in enumerate(rows["unit"]) if u is not None]
    assert all(rows["pred_prob"][i] is None and rows["score"][i] >= 0.5 for i in task_rows)


def test_segmentation_gallery_outlines_the_region(tmp_path, scene_dir):  # noqa: F811
    out = tmp_path / "seg"
    assert main(["evaluate", "--model", "tiny_segmenter", "--task", "segmentation", "--data", str(scene_dir),
                 "--out", str(out), *COMMON, "--metrics", "energy_pointing_game"]) == 0
    rows = read_rows(out)
    seg = load_model("tiny_segmenter")
    data = open_images(scene_dir)
    stream = ImageStream(data, seg.preprocess)
    shown = sorted(p.name for p in (out / "images").glob("input_*.png"))
    assert shown
    for name in shown:
        u = int(name[len("input_"):-len(".png")])
        label = next(t for t, uu in zip(rows["target"], rows["unit"]) if uu == u)
        image = stream[u // UNIT]["image"]
        with torch.no_grad():
            region = segmentation_logits(seg.model(seg.preprocess.normalize(image[None]))).argmax(1)[0] == label
        assert bool(region.any())
        expected = (draw_outline(image, region, (1.0, 1.0, 1.0)).permute(1, 2, 0).numpy() * 255).round()
        got = np.asarray(Image.open(out / "images" / name)).astype(np.float64)
        assert np.array_equal(got, expected)
        plain = (image.permute(1, 2, 0).numpy() * 255).round()
        changed = (got != plain).any(axis=-1)
        assert changed.any() and (got[changed] == 255).all() and changed.sum() <= region.sum()
