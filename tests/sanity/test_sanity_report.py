"""The report: sanity.json, the paper's figure, the curves and index.html with escaped names."""
from __future__ import annotations

import json

import pytest
import torch

from interpretorch.models import TinyCNN
from interpretorch.sanity import model_randomization
from interpretorch.sanity.report import save_report


def test_report_files_and_escaping(tmp_path):
    model = TinyCNN(num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    r = model_randomization(model, x, ["gradient", "gradcam"], keep_maps=2, max_steps=2)
    assert r.steps == ["fc", "features.8+features.9"]
    index = save_report(r, tmp_path / "out", images=torch.rand(2, 3, 32, 32),
                        image_names=["<script>alert(1)</script>.png", "b.png"], model_name="tiny & <b>")
    out = tmp_path / "out"
    for f in ("sanity.json", "figure_0.png", "figure_1.png", "curves.png", "index.html"):
        assert (out / f).stat().st_size > 0, f
    d = json.loads((out / "sanity.json").read_text())
    assert d["steps"] == r.steps and d["methods"]["gradcam"]["verdict"]["metric"] == "spearman_abs"
    html = index.read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;.png" in html
    assert "tiny &amp; &lt;b&gt;" in html
    assert html.count('src="figure_') == 2 and "curves.png" in html
    # PNG figures decode, with one row per method.
    from PIL import Image

    w, h = Image.open(out / "figure_0.png").size
    assert w > h > 100


def test_a_result_without_maps_has_no_figure(tmp_path):
    from interpretorch.sanity.report import figure

    model = TinyCNN(num_classes=5).eval()
    r = model_randomization(model, torch.randn(1, 3, 32, 32), ["gradient"], keep_maps=0, max_steps=1,
                            metrics=["spearman_abs"])
    with pytest.raises(ValueError, match="keep_maps"):
        figure(r)
    save_report(r, tmp_path)  # curves and json only
    assert (tmp_path / "curves.png").exists() and not (tmp_path / "figure_0.png").exists()
