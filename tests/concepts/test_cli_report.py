"""The tcav and discover commands: files written as the issue specifies, user errors as one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from interpretorch.cli import main


def _folder(path, n, seed, name="im{}.png"):
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path / name.format(i))
    return path


@pytest.fixture
def dirs(tmp_path):
    cls = _folder(tmp_path / "class", 6, 0, name="<b>im{}.png")
    rnd = _folder(tmp_path / "random", 24, 1)
    concept = _folder(tmp_path / "mine", 8, 2)
    return tmp_path, cls, rnd, concept


def test_tcav_command_writes_json_and_html(dirs, capsys):
    tmp, cls, rnd, concept = dirs
    out = tmp / "out"
    args = ["tcav", "--images", str(cls), "--target", "3", "--concepts", str(concept), "stripes",
            "--random", str(rnd), "--runs", "3", "--set-size", "8", "--layers", "features.6,features.10",
            "--model", "tiny_cnn", "--size", "32", "--out", str(out)]
    assert main(args) == 0
    data = json.loads((out / "tcav.json").read_text())
    assert set(data) == {"target", "layers", "headline", "correction", "flags", "low_power_rule", "results"}
    assert data["correction"] == {"method": "holm", "tests": 4, "note": data["correction"]["note"]}
    assert "4 tests" in data["correction"]["note"] and data["headline"]
    assert data["target"] == 3 and data["layers"] == ["features.6", "features.10"]
    assert len(data["results"]) == 4
    for r in data["results"]:
        assert set(r) == {"layer", "concept", "score", "score_std", "magnitude", "random_score", "random_std",
                          "p_value", "significant", "p_value_uncorrected", "direction", "runs", "score_ci_low",
                          "score_ci_high", "low_power", "detectable_difference"}
        assert r["p_value"] >= r["p_value_uncorrected"]
    assert {r["concept"] for r in data["results"]} == {"mine", "stripes"}
    html = (out / "index.html").read_text()
    assert "&lt;b&gt;im" in html and "<b>im" not in html
    assert (out / "figures" / "scores.png").exists()
    # activations are cached, and a second run (served from the cache) gives the same numbers
    entries = sorted((out / "cache").glob("*.pt"))
    assert len(entries) == 2 * (1 + 1 + 3)  # (mine, stripes, 3 random sets) x 2 layers
    mtimes = [e.stat().st_mtime_ns for e in entries]
    assert main(args) == 0
    assert json.loads((out / "tcav.json").read_text()) == data
    assert [e.stat().st_mtime_ns for e in sorted((out / "cache").glob("*.pt"))] == mtimes


def test_tcav_command_user_errors(dirs, capsys):
    tmp, cls, rnd, concept = dirs
    base = ["tcav", "--images", str(cls), "--target", "1", "--random", str(rnd), "--model", "tiny_cnn",
            "--size", "32", "--out", str(tmp / "o")]
    assert main(base + ["--concepts", "plaid", "--layers", "features.6"]) == 2
    assert "neither a folder nor a generator" in capsys.readouterr().err
    assert main(base + ["--concepts", "dots", "--layers", "featurez"]) == 2
    assert "no layer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # refused while parsing, before any work
        main(base + ["--concepts", "dots", "--layers", "features.6", "--runs", "2"])
    assert stop.value.code == 2 and "at least 3 random runs" in capsys.readouterr().err


def test_discover_command_writes_concepts_json(dirs):
    tmp, cls, rnd, concept = dirs
    out = tmp / "disc"
    rc = main(["discover", "--images", str(cls), "--target", "2", "--layer", "features.10", "--concepts", "3",
               "--runs", "3", "--model", "tiny_cnn", "--size", "32", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "concepts.json").read_text())
    assert data["target"] == 2 and len(data["concepts"]) == 3
    imps = [c["importance"] for c in data["concepts"]]
    assert imps == sorted(imps, reverse=True)
    for c in data["concepts"]:
        assert {"score", "p_value", "significant", "patches"} <= set(c)
        for p in c["patches"]:
            assert p["image"].endswith(".png") and len(p["box"]) == 4
    assert "&lt;b&gt;im" in (out / "index.html").read_text()
