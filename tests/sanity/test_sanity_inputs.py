"""sanity refuses thresholds no similarity can be below (NaN, infinite, out of the metric's range) and, like
explain, reports on the readable images and exits 1 when one image could not be read."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from interpretorch.cli import main
from interpretorch.sanity import VerdictRule

BASE = ["sanity", "--model", "tiny_cnn", "--methods", "gradient", "--max-steps", "1"]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1.5", "0", "-0.2"])
def test_threshold_outside_the_metric_range_is_refused(tmp_path, capsys, value):
    assert main([*BASE, f"--threshold={value}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threshold must be a number in (0, 1]" in err[0]
    assert not (tmp_path / "o" / "sanity.json").exists()


def test_threshold_range_follows_the_metric():
    assert VerdictRule("spearman", -0.5).threshold == -0.5  # signed correlations go down to -1
    with pytest.raises(ValueError, match=r"\(-1, 1\]"):
        VerdictRule("ssim", -1.0)
    with pytest.raises(ValueError, match="got nan"):
        VerdictRule("spearman_abs", float("nan"))


def test_unreadable_image_is_skipped_named_and_exits_one_like_explain(tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    args = [str(good), str(bad), "--model", "tiny_cnn", "--methods", "gradient"]
    assert main(["explain", *args, "--out", str(tmp_path / "e")]) == 1  # the reference behaviour
    capsys.readouterr()
    assert main([*BASE[:1], *args, "--max-steps", "1", "--out", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert f"skipping {bad}" in err and "Traceback" not in err
    d = json.loads((tmp_path / "s" / "sanity.json").read_text())
    assert d["extra"]["unreadable images"] == str(bad) and "gradient" in d["methods"]
    assert main([*BASE[:1], str(good), "--model", "tiny_cnn", "--methods", "gradient", "--max-steps", "1",
                 "--out", str(tmp_path / "s2")]) == 0
