"""Metric families: a category name selects every metric of it (evaluate and the CLI), the new metrics describe
themselves, and the report groups its columns by family."""
from __future__ import annotations

import pytest
import torch

from interpretorch.attribution import layer_cams
from interpretorch.metrics import CATEGORIES, evaluate, family, get_metric, register_metric
from interpretorch.metrics.registry import resolve_metrics
from interpretorch.models import TinyCNN
from interpretorch.report.evaluation import evaluation_table


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.randn(2, 3, 16, 16)
    return model, x, layer_cams(model, x, ["gradcam", "gradcam++"], layer="features")


def test_a_family_name_selects_its_metrics():
    assert family("complexity") == ["sparseness", "entropy", "effective_complexity"]
    faith = family("faithfulness")
    assert {"deletion", "faithfulness_correlation", "pixel_flipping", "irof"} <= set(faith)
    assert resolve_metrics(["Complexity", "deletion"]) == ["sparseness", "entropy", "effective_complexity",
                                                           "deletion"]
    assert all(get_metric(m).figures[0].category == "faithfulness" for m in faith)
    with pytest.raises(ValueError, match="family"):
        family("speed")
    with pytest.raises(ValueError, match="named after a family"):
        register_metric("robustness", lambda ctx, m, e: torch.ones(len(e)), category="robustness",
                        direction="lower")
    for cat in CATEGORIES:
        assert all(f in ("higher", "lower") for m in family(cat) for f in [get_metric(m).figures[0].direction])


def test_evaluate_runs_a_family_and_the_report_groups_by_family(setup):
    model, x, exps = setup
    res = evaluate(model, x, exps, metrics=["infidelity", "complexity", "deletion"], deletion={"step": 0.5},
                   infidelity={"n_perturb": 2})
    assert set(res["gradcam"]) == {"target", "deletion", "infidelity", "sparseness", "entropy",
                                   "effective_complexity"}
    g = evaluation_table(res, {"gradcam": "region", "gradcam++": "region"})["groups"][0]
    # faithfulness, robustness, complexity: Quantus's order of families, whatever order they were asked in
    assert [c["key"] for c in g["columns"]] == ["deletion", "infidelity", "sparseness", "entropy",
                                                "effective_complexity"]
    assert [c["family"] for c in g["columns"]][1:3] == ["robustness", "complexity"]
    assert g["families"] == [{"name": "faithfulness", "span": 1}, {"name": "robustness", "span": 1},
                             {"name": "complexity", "span": 3}]
    assert [c["better"] for c in g["columns"]] == ["lower", "lower", "higher", "lower", "lower"]


def test_cli_evaluate_takes_a_family(tmp_path, capsys):
    from PIL import Image

    from interpretorch.cli import main

    img = tmp_path / "a.png"
    Image.fromarray((torch.rand(20, 20, 3) * 255).byte().numpy()).save(img)
    out = tmp_path / "out"
    code = main(["evaluate", str(img), "--model", "tiny_cnn", "--size", "16", "--methods", "gradcam",
                 "--metrics", "complexity", "--out", str(out)])
    assert code == 0
    import json

    res = json.loads((out / "results.json").read_text())
    assert set(res["evaluation"]["gradcam"]) - {"target"} == {"sparseness", "entropy", "effective_complexity"}
    assert "complexity" in (out / "index.html").read_text()
