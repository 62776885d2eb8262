"""``interpretorch sanity``: the command module run with a parsed Namespace, and its user errors."""
from __future__ import annotations

import argparse
import json

import pytest

from interpretorch.cli import sanity as cmd
from interpretorch.cli.common import UserError


def _args(tmp_path, *argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    return p.parse_args([*argv, "--out", str(tmp_path / "out")])


def test_cascading_on_a_small_model_writes_the_report(tmp_path, capsys):
    from PIL import Image
    import numpy as np

    img = tmp_path / "a <b>.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(img)
    args = _args(tmp_path, str(img), "--model", "tiny_cnn", "--methods", "gradient,gradcam", "--by-step", "1",
                 "--threshold", "0.9")
    assert cmd.run(args) == 0
    d = json.loads((tmp_path / "out" / "sanity.json").read_text())
    assert d["mode"] == "cascading" and len(d["steps"]) == 4
    assert d["methods"]["gradient"]["verdict"]["by_step"] == d["steps"][1]
    assert d["methods"]["gradient"]["verdict"]["threshold"] == 0.9
    html = (tmp_path / "out" / "index.html").read_text()
    assert "a &lt;b&gt;.png" in html and (tmp_path / "out" / "figure_0.png").exists()
    assert "gradient:" in capsys.readouterr().out


def test_independent_with_named_blocks(tmp_path):
    args = _args(tmp_path, "--model", "tiny_cnn", "--methods", "gradient", "--mode", "independent", "--max-steps", "1",
                 "--blocks", "fc,features.0", "--init", "normal", "--init-std", "0.05")
    assert cmd.run(args) == 0
    d = json.loads((tmp_path / "out" / "sanity.json").read_text())
    assert d["steps"] == ["fc"] and d["config"]["init"] == "normal"


def test_user_errors(tmp_path):
    with pytest.raises(UserError, match="--methods is empty"):
        cmd.run(_args(tmp_path, "--model", "tiny_cnn", "--methods", ","))
    with pytest.raises(UserError, match="synthetic localisation set"):
        cmd.run(_args(tmp_path, "x.png", "--mode", "data"))
    with pytest.raises(KeyError, match="no layer"):
        cmd.run(_args(tmp_path, "--model", "tiny_cnn", "--methods", "gradient", "--blocks", "nope"))
