"""`interpretorch gandissect` and `gan-intervene` on a user's toy generator and segmenter; user errors exit 2."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from interpretorch.cli import main

HERE = Path(__file__).parent
TOY = ["--generator", "gan_toys:toy_generator", "--segmenter", "gan_toys:toy_segmenter", "--samples", "20",
       "--quantile", "0.5", "--intervention-samples", "6"]


@pytest.fixture(autouse=True)
def _toys_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_gandissect_writes_tally_interventions_and_report(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["gandissect", *TOY, "--layers", "feat", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "feat_tally.csv")))
    assert list(rows[0])[:4] == ["unit", "category", "label", "score"]
    assert "concept-iou" in rows[0]
    assert rows[0]["unit"] == "0" and rows[0]["label"] == "A" and float(rows[0]["score"]) == 1.0
    inter = json.loads((out / "interventions.json").read_text())
    a = next(i for i in inter if i["concept"] == "A")
    assert a["ablations"][0]["removed"] == 1.0 and a["k"] == 1
    html = (out / "index.html").read_text()
    assert "feat" in html and "Interventions" in html
    assert (out / "feat_files" / "A_interventions.png").exists()
    assert "1/3 units" in html or "units covering" in html
    assert "top 1 off removes 100.0%" in capsys.readouterr().out


def test_gan_intervene_with_a_region_and_escaped_names(tmp_path):
    out = tmp_path / "o"
    assert main(["gan-intervene", *TOY, "--classes", "<b>x</b>,A", "--layer", "feat", "--concept", "A",
                 "--units", "1", "--region", "0,0,4,8", "--out", str(out)]) == 0
    inter = json.loads((out / "interventions.json").read_text())
    assert len(inter) == 1 and inter[0]["insertion"]["region"] == [0, 0, 4, 8]
    assert inter[0]["insertion"]["fraction_new_inside_region"] == 1.0
    html = (out / "index.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html


@pytest.mark.parametrize("extra, message", [
    (["--concept", "C"], "not a class"),
    (["--units", "9"], "has 3 units"),
    (["--layer", "nope"], "nope"),
    (["--region", "0,0,9,9"], "inside the 8x8 image"),
])
def test_user_errors_exit_2(tmp_path, capsys, extra, message):
    args = {"--layer": "feat", "--concept": "A", "--units": "1"}
    for i in range(0, len(extra), 2):
        args[extra[i]] = extra[i + 1]
    flat = [x for kv in args.items() for x in kv]
    assert main(["gan-intervene", *TOY, *flat, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_generator_without_segmenter_is_refused(tmp_path, capsys):
    assert main(["gandissect", "--generator", "gan_toys:toy_generator", "--out", str(tmp_path / "x")]) == 2
    assert "--segmenter" in capsys.readouterr().err
