"""The report options of `interpretorch explain` / `evaluate`: --labels, --folder-labels, --topk, --shared-scale, and
the evaluation section (n, spread, protocol, one-decimal percentages, ROAD curves, pixel maps apart)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.cli.explain import class_index
from interpretorch.cli.common import UserError


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: threads only add contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _images(folder, names, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for n in names:
        p = folder / n
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_labels_mark_right_and_wrong_predictions(tmp_path, capsys):
    paths = _images(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    base = ["explain", *map(str, paths), "--model", "tiny_cnn", "--size", "32", "--methods", "gradcam"]
    assert main(base + ["--out", str(tmp_path / "r0")]) == 0
    pred = [i["predictions"][0]["index"] for i in json.loads((tmp_path / "r0" / "results.json").read_text())["images"]]
    labels = tmp_path / "labels.csv"
    # a: its prediction (by index), b: another class (by name), c: not listed
    labels.write_text(f"# image,label\na.png,{pred[0]}\n{paths[1]},class {(pred[1] + 1) % 10}\n")
    assert main(base + ["--out", str(tmp_path / "r1"), "--labels", str(labels)]) == 0
    res = json.loads((tmp_path / "r1" / "results.json").read_text())["images"]
    assert [i["correct"] for i in res] == [True, False, None]
    assert [i["label"] for i in res] == [pred[0], (pred[1] + 1) % 10, None]
    html = (tmp_path / "r1" / "index.html").read_text()
    assert html.count('class="badge right">right') == 1 and html.count('class="badge wrong">wrong') == 1
    assert "<b>1 of 2</b> labelled image(s) predicted right" in html
    labels.write_text("a.png,zebra\n")
    assert main(base + ["--out", str(tmp_path / "r2"), "--labels", str(labels)]) == 2
    assert "'zebra' is neither a class index nor a class name" in capsys.readouterr().err
    labels.write_text("a.png\n")
    assert main(base + ["--out", str(tmp_path / "r2"), "--labels", str(labels)]) == 2
    assert "line 1: expected 'IMAGE,LABEL'" in capsys.readouterr().err


def test_folder_labels_and_class_names():
    names = ["tabby, tabby cat", "loudspeaker, speaker, speaker unit"]
    assert class_index("speaker", names) == 1 and class_index("Tabby_cat", names) == 0 and class_index("0", names) == 0
    with pytest.raises(UserError, match="not a class index"):
        class_index("7", names)


def test_folder_labels_from_imagefolder_layout(tmp_path):
    paths = _images(tmp_path / "root", ["class 3/x.png", "class 7/y.png"])
    out = tmp_path / "rep"
    assert main(["explain", str(tmp_path / "root"), "--model", "tiny_cnn", "--size", "32", "--methods", "gradient",
                 "--folder-labels", "--topk", "2", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [i["label"] for i in res["images"]] == [3, 7] and res["top_classes"] == 2
    assert all("2" in i["ranks"] for i in res["images"])
    assert main(["explain", str(paths[0]), "--model", "tiny_cnn", "--topk", "2", "--target", "1",
                 "--out", str(out)]) == 2


def test_evaluation_section_states_n_spread_protocol_and_groups(tmp_path, capsys):
    paths = _images(tmp_path, ["a.png", "b.png", "c.png"], seed=3)
    out = tmp_path / "rep"
    assert main(["evaluate", *map(str, paths), "--model", "tiny_cnn", "--size", "32", "--methods",
                 "gradcam,eigencam,gradient", "--shared-scale", "--out", str(out)]) == 0
    assert "evaluating" in capsys.readouterr().err  # a progress bar while it runs
    res = json.loads((out / "results.json").read_text())
    assert res["evaluation_seconds"] > 0 and res["evaluation_protocol"]["deletion"]["substrate"] == "zeros"
    drop = res["evaluation"]["gradcam"]["average_drop"]
    per = [v for v in drop["per_image"] if v is not None]
    assert drop["n"] == len(per) == 3 and drop["std"] == pytest.approx(float(np.std(per, ddof=1)))
    html = (out / "index.html").read_text()
    region, pixel = html.split("<h3>Region maps", 1)[1].split("<h3>Pixel attributions", 1)
    assert "gradcam" in region and "gradient" not in region and "gradient" in pixel and "n = 3 images" in region
    # percentages to one decimal with their spread
    assert re.search(r"<td[^>]*>(<b>)?\d+\.\d(</b>)?<br><small class=\"std\">± \d+\.\d</small></td>", region)
    assert not re.search(r"\d\.\d{3}", region.split("<tr>", 2)[2].split("</tr>")[0].split("Deletion")[0])
    assert "Average Drop (%) †" in pixel and "† Average Drop, Increase in Confidence and Win" in pixel
    assert "Deletion: pixels replaced by zeros, 1% of the pixels per step" in html
    for key in ("deletion", "insertion", "road_morf", "road_lerf"):
        assert f"images/curve_{key}.png" in html and (out / "images" / f"curve_{key}.png").exists()
    assert "evaluation (all metrics, all methods)" in html
    # comparisons: Holm-corrected paired tests; 3 images cannot establish a winner (Wilcoxon's smallest p is 0.25);
    # Average Drop is not compared between a CAM and a pixel attribution; the headline says so, first on the page
    comp = res["comparisons"]
    rows = [r for rows in comp["paired"].values() for r in rows]
    assert rows and all(r["p_value_corrected"] >= r["p_value"] and r["winner"] == "no winner" for r in rows)
    assert ("gradcam", "gradient") in {(r["a"], r["b"]) for r in comp["refused"] if r["metric"] == "average_drop"}
    assert not any(r["metric"] == "average_drop" and "gradient" in (r["a"], r["b"]) for r in rows)
    assert res["headline"].endswith(comp["headline"]) and "no method beats another" in res["headline"]
    assert html.index("no method beats another") < html.index("<h2")
