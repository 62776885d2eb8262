"""The `interpretorch` command: report files, bad images, user models and clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from interpretorch.cli import main


def _check_report(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    html = (out / "index.html").read_text()
    for img in results["images"]:
        for rel in [img["image"]] + [m["overlay"] for m in img["methods"].values()]:
            assert rel in html
            with Image.open(out / rel) as im:  # every picture the page shows loads
                im.load()
                assert im.size[0] > 0
        for m in img["methods"].values():
            assert np.load(out / m["map"]).ndim == 2
    return results


def test_explain_without_arguments_uses_samples_and_pretrained_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["explain"]) == 0
    out = tmp_path / "interpretorch-report"
    results = _check_report(out)
    assert [i["name"] for i in results["images"]] == ["chelsea", "coffee", "astronaut", "rocket"]
    assert 281 <= results["images"][0]["predictions"][0]["index"] <= 285
    assert len(results["images"][0]["predictions"]) == 5
    assert set(results["images"][0]["methods"]) == set(results["method_names"]) and len(results["method_names"]) >= 7
    gc = results["images"][1]["methods"]["gradcam"]
    assert gc["layer"] == "_head_act" and gc["target"] in (967, 968) and gc["seconds"] > 0


def test_bad_image_is_skipped_and_reported(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "rep"
    code = main(["explain", str(folder), "--model", "tiny_cnn", "--methods", "gradcam,scorecam",
                 "--out", str(out), "--target", "3"])
    assert code == 1
    assert "corrupt.png" in capsys.readouterr().err
    results = _check_report(out)
    assert [Path(i["file"]).name for i in results["images"]] == ["a.png", "b.jpg"]
    assert results["failed"][0]["file"].endswith("corrupt.png")
    assert "corrupt.png" in (out / "index.html").read_text()
    assert all(i["methods"]["scorecam"]["target"] == 3 for i in results["images"])


def test_user_model_factory_and_errors(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "rep"
    assert main(["explain", str(img), "--model", "interpretorch.models.tiny:TinyCNN", "--size", "32",
                 "--methods", "gradcam", "--out", str(out)]) == 0
    assert _check_report(out)["layer"] == "features"
    assert main(["explain", str(img), "--model", "tiny_cnn", "--layer", "feature", "--out", str(out)]) == 2
    assert "features" in capsys.readouterr().err  # names the closest layer
    assert main(["explain", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert main(["explain", str(img), "--methods", "gradcamm", "--out", str(out)]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_evaluate_adds_metrics_table_and_curves(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name)
    out = tmp_path / "rep"
    assert main(["evaluate", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--model", "tiny_cnn",
                 "--methods", "gradcam,gradient", "--out", str(out)]) == 0
    results = _check_report(out)
    ev = results["evaluation"]
    assert set(ev) == {"gradcam", "gradient"}
    for entry in ev.values():
        assert 0.0 <= entry["deletion"]["value"] <= 1.0 and 0.0 <= entry["insertion"]["value"] <= 1.0
        assert len(entry["average_drop"]["per_image"]) == 2
    html = (out / "index.html").read_text()
    assert "Deletion AUC" in html and "images/curve_deletion.png" in html and "images/curve_road_morf.png" in html
    with Image.open(out / "images" / "curve_insertion.png") as im:
        im.load()
    assert "evaluation_html" not in results


def test_all_methods_with_options_and_pixel_views(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "rep"
    opts = ["rise.n_masks=12", "rise.grid=4", "integrated_gradients.steps=3", "integrated_gradients.baseline=blur",
            "smoothgrad.n_samples=2", "vargrad.n_samples=2", "occlusion.window=(8,12)", "gradcam.relu=False"]
    args = ["explain", str(img), "--model", "tiny_cnn", "--size", "32", "--methods", "all", "--out", str(out)]
    assert main(args + [a for o in opts for a in ("--option", o)]) == 0
    results = _check_report(out)
    entry = results["images"][0]["methods"]
    assert set(entry) == set(results["method_names"]) and {"rise", "occlusion", "guided_gradcam"} <= set(entry)
    assert entry["rise"]["options"] == {"n_masks": 12, "grid": 4}
    assert entry["occlusion"]["options"] == {"window": [8, 12]}
    assert entry["integrated_gradients"]["options"] == {"steps": 3, "baseline": "blur"}
    # gradcam ran on its own with its option; the other gradient CAMs still shared one pass
    timing = results["timing"]
    assert timing["gradcam"]["shared_with"] == [] and "layercam" in timing["gradcam++"]["shared_with"]
    html = (out / "index.html").read_text()
    for m in ("gradient", "guided_backprop", "integrated_gradients", "smoothgrad"):  # pixel maps: both views
        e = entry[m]
        assert e["signed"] and e["signed"] in html and e["view"].startswith("abs_grayscale")
        with Image.open(out / e["overlay"]) as gray, Image.open(out / e["signed"]) as div:
            g, d = np.asarray(gray.convert("RGB")), np.asarray(div.convert("RGB"))
        assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()  # grayscale
        assert g.max() == 255 and d.shape == g.shape  # clipped at the 99th percentile: the top pixels saturate
    for m in ("gradcam", "occlusion", "rise"):
        assert entry[m]["signed"] is None and entry[m]["view"].startswith("overlay")
    assert main(args + ["--option", "rise.n_mask=5"]) == 2
    assert "n_masks" in capsys.readouterr().err  # lists what rise takes
    assert main(args[:-4] + ["--methods", "gradcam", "--out", str(out), "--option", "rise.n_masks=5"]) == 2
    assert "not among the methods" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(args + ["--option", "rise=5"])


def test_shared_model_flags_and_one_line_errors(tmp_path, capsys):
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "rep"
    assert main(["explain", str(img), "--model", "tiny_cnn", "--size", "48", "--mean", "0.4,0.4,0.4", "--std",
                 "0.2,0.2,0.2", "--methods", "gradcam", "--out", str(out)]) == 0
    with Image.open(out / json.loads((out / "results.json").read_text())["images"][0]["image"]) as im:
        assert im.size == (48, 48)
    (tmp_path / "file").write_text("")
    for bad, word in ((["--device", "gpu"], "device"), (["--out", str(tmp_path / "file")], "existing file"),
                      (["--target", "1,2"], "2 targets for 1 images"), (["--methods", ","], "names no method")):
        assert main(["explain", str(img), "--model", "tiny_cnn", "--out", str(out)] + bad) == 2
        err = capsys.readouterr().err
        assert word in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["explain", "--size", "0"])
    assert main(["layers", "--model", "tiny_cnn"]) == 0
    assert "features" in capsys.readouterr().out


def test_explain_sanity_adds_a_verdict_badge_per_method(tmp_path):
    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "rep"
    assert main(["explain", str(img), "--model", "tiny_cnn", "--size", "32", "--methods", "gradcam,gradient",
                 "--sanity", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["sanity"]) == {"gradcam", "gradient"}
    for v in results["sanity"].values():
        assert isinstance(v["passes"], bool) and v["report"] == "sanity/index.html"
    html = (out / "index.html").read_text()
    assert "sanity: passes" in html or "sanity: fails" in html
    assert (out / "sanity" / "index.html").exists() and (out / "sanity" / "sanity.json").exists()
