"""`evaluate --data` / `explain --data`: the report (summary first, gallery pages of a fixed size), resume from
the CLI, and one-line errors for what is wrong."""
from __future__ import annotations

import json
import re

import pytest
import torch

from scale_data import TINY_CNN_FOLDERS, write_dataset
from interpretorch.cli import main
from interpretorch.datasets import read_rows
from interpretorch.datasets.report import PER_SECTION, pick_gallery

BASE = ["--model", "tiny_cnn", "--size", "32", "--batch-size", "4"]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_pick_gallery_best_worst_random():
    vals = {i: float((i * 7) % 30) for i in range(30)}
    picks = pick_gallery(vals, "lower", per_section=4, seed=1)
    assert [vals[i] for i in picks["best"]] == [0.0, 1.0, 2.0, 3.0]
    assert [vals[i] for i in picks["worst"]] == [29.0, 28.0, 27.0, 26.0]
    assert len(set(picks["random"])) == 4 and picks["random"] == pick_gallery(vals, "lower", 4, seed=1)["random"]
    assert pick_gallery(vals, "higher", per_section=4)["best"] == picks["worst"]


def test_evaluate_data_report_and_resume(tmp_path, capsys):
    data = write_dataset(tmp_path, 26, boxes=True, folders=TINY_CNN_FOLDERS)
    out = tmp_path / "out"
    args = ["evaluate", *BASE, "--data", str(data), "--boxes", str(tmp_path / "boxes"), "--methods", "gradcam,gradient",
            "--metrics", "average_drop,pointing_game", "--target", "label", "--limit", "25", "--seed", "3",
            "--gallery-metric", "pointing_game", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Pointing game" in printed and "gradcam" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 25 and set(summary["win_percentage"]) == {"gradcam", "gradient"}
    assert abs(sum(summary["win_percentage"].values()) - 100.0) < 1e-9
    index = (out / "index.html").read_text()
    assert index.index("Summary") < index.index("Paired comparisons") < index.index("Gallery")
    for m in ("gradcam", "gradient"):
        page = (out / "gallery" / f"{m}.html").read_text()
        shown = re.findall(r'<img src="\.\./images/input_', page)
        assert 0 < len(shown) <= 3 * PER_SECTION < 25  # never every image on one page
        first = int(re.search(r"input_(\d+)", page).group(1))
        assert (out / "images" / f"{m}_{first:07d}.png").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["images"] == 25 and manifest["methods"] == ["gradcam", "gradient"]
    assert {"torch", "numpy", "python"} <= set(manifest["versions"]) and manifest["target"] == "label"
    rows = read_rows(out)
    assert main(args + ["--resume"]) == 0  # everything done: nothing recomputed, same rows
    assert read_rows(out) == rows
    assert "--resume" in _error(capsys, args)  # without --resume: refused, the earlier run is kept
    assert "other settings" in _error(capsys, args[:-2] + ["--limit", "24", "--out", str(out), "--resume"])


def test_explain_data_saves_maps(tmp_path):
    data = write_dataset(tmp_path, 3, layout="folder")
    assert main(["explain", *BASE, "--data", str(data), "--methods", "gradcam", "--out", str(tmp_path / "o")]) == 0
    assert list((tmp_path / "o" / "shards").glob("maps-*.npz")) and not (tmp_path / "o" / "summary.json").exists()
    assert "random sample" in (tmp_path / "o" / "gallery" / "gradcam.html").read_text().lower()


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("interpretorch: error:")
    return err


def test_user_errors_are_one_line(tmp_path, capsys):
    data = write_dataset(tmp_path / "d", 2, layout="folder")
    (tmp_path / "empty").mkdir()
    (data / "list.txt").write_text("../../etc/passwd\n")
    ev = ["evaluate", *BASE, "--methods", "gradcam"]
    assert "no images" in _error(capsys, ev + ["--data", str(tmp_path / "empty")])
    assert "outside the dataset folder" in _error(capsys, ev + ["--data", str(data / "list.txt")])
    assert "no such file or folder" in _error(capsys, ev + ["--data", str(tmp_path / "nope")])
    assert "needs --data" in _error(capsys, ev + ["--target", "label"])
    assert "label for every image" in _error(capsys, ev + ["--data", str(data), "--target", "label",
                                                          "--out", str(tmp_path / "o1")])
    assert "not both" in _error(capsys, ev + ["--data", str(data), "--boxes", str(data), "--masks", str(data)])
    assert "--boxes or --masks" in _error(capsys, ev + ["--data", str(data), "--metrics", "pointing_game",
                                                       "--out", str(tmp_path / "o2")])
    assert "not both" in _error(capsys, ev + ["--data", str(data), str(data / "img0000.png")])
    assert "not computed" in _error(capsys, ev + ["--data", str(data), "--metrics", "deletion",
                                                 "--gallery-metric", "insertion", "--out", str(tmp_path / "o3")])
    assert "needs --data" in _error(capsys, ev + ["--workers", "2"])


def test_unreadable_image_exit_code_one(tmp_path, capsys):
    data = write_dataset(tmp_path, 2, layout="folder")
    (data / "bad.png").write_bytes(b"garbage")
    code = main(["evaluate", *BASE, "--data", str(data), "--methods", "gradcam", "--metrics", "average_drop",
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1 and "bad.png" in err and "could not be read" in err
    assert "bad.png" in (tmp_path / "o" / "index.html").read_text()
