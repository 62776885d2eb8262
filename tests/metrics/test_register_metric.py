"""``register_metric`` from outside the package: a metric describes itself, ``evaluate`` runs it, and the report's
tables and the dataset summary read its description."""
from __future__ import annotations

import pytest
import torch

from interpretorch.attribution import layer_cams
from interpretorch.datasets.summary import summarize
from interpretorch.metrics import METRIC_INFO, evaluate, get_metric, register_metric, unregister_metric
from interpretorch.metrics.evaluate import protocol, win_within
from interpretorch.models import TinyCNN
from interpretorch.report.evaluation import evaluation_table


def gini(ctx, method, exp, *, eps: float = 1e-12):
    """Gini index of each map's |values| (Chalasani et al. 2020): 0 spread evenly, 1 one pixel."""
    v = exp.map2d(ctx.rule).abs().reshape(len(exp), -1).double().sort(dim=1).values
    n = v.shape[1]
    k = torch.arange(1, n + 1, dtype=v.dtype)
    return ((2 * k - n - 1) * v).sum(1) / (n * v.sum(1) + eps)


@pytest.fixture
def user_gini():
    metric = register_metric("user_gini", gini, category="complexity", direction="higher", kinds=("region", "pixel"),
                             label="User Gini", default=False, protocol=("eps",))
    yield metric
    unregister_metric("user_gini")


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.randn(3, 3, 16, 16)
    return model, x, layer_cams(model, x, ["gradcam", "gradcam++"], layer="features")


def test_a_registered_metric_runs_through_evaluate(setup, user_gini):
    model, x, exps = setup
    res = evaluate(model, x, exps, metrics=["deletion", "user_gini"], deletion={"step": 0.5})
    for m, e in exps.items():
        v = e.maps.abs().reshape(3, -1).double().sort(dim=1).values
        n = v.shape[1]
        want = ((2 * torch.arange(1, n + 1) - n - 1) * v).sum(1) / (n * v.sum(1))
        assert res[m]["user_gini"]["per_image"] == pytest.approx(want.tolist(), rel=1e-9)
        assert res[m]["user_gini"]["value"] == pytest.approx(float(want.mean()), rel=1e-9)
        assert res[m]["user_gini"]["n"] == 3 and res[m]["user_gini"]["std"] > 0
        assert list(res[m]) == ["target", "deletion", "user_gini"]  # the registry's order
    # its options reach it, and its protocol states them
    res = evaluate(model, x, exps, metrics="user_gini", user_gini={"eps": 1e6})
    assert res["gradcam"]["user_gini"]["value"] < 1e-3
    assert protocol(["user_gini"], user_gini={"eps": 0.5}) == {"user_gini": {"eps": 0.5}}
    assert "user_gini" not in evaluate(model, x, exps, metrics=None)["gradcam"]  # not a default


def test_the_reports_read_a_registered_metric(setup, user_gini):
    model, x, exps = setup
    assert METRIC_INFO["user_gini"] == ("User Gini", "higher", "")
    assert get_metric("USER-GINI").figures[0].category == "complexity"
    res = evaluate(model, x, exps, metrics=["user_gini"])
    table = evaluation_table(res, {"gradcam": "region", "gradcam++": "region"})
    col = table["columns"][0]
    assert (col["key"], col["label"], col["better"]) == ("user_gini", "User Gini", "higher")
    best = max(res[m]["user_gini"]["value"] for m in res)
    assert [c["best"] for r in table["rows"] for c in r["cells"]] == [res[m]["user_gini"]["value"] == best
                                                                     for m in res]
    rows = {"image": [0, 1, 2, 0, 1, 2], "method": ["gradcam"] * 3 + ["gradcam++"] * 3, "error": [None] * 6,
            "user_gini": res["gradcam"]["user_gini"]["per_image"] + res["gradcam++"]["user_gini"]["per_image"]}
    summary = summarize(rows, ["gradcam", "gradcam++"], ["user_gini"])
    assert summary["directions"] == {"user_gini": "higher"} and summary["labels"] == {"user_gini": "User Gini"}


def test_a_metric_that_suits_region_maps_only_is_flagged_for_pixel_attributions(setup):
    register_metric("region_only", lambda ctx, m, e: torch.ones(len(e)), category="faithfulness",
                    direction="lower", unit="%", kinds=("region",))
    try:
        model, x, exps = setup
        res = evaluate(model, x, exps, metrics=["region_only"])
        table = evaluation_table(res, {"gradcam": "region", "gradcam++": "pixel"})
        flags = {g["kind"]: g["columns"][0]["flag"] for g in table["groups"]}
        assert flags == {"region": False, "pixel": True}
        assert table["groups"][0]["columns"][0]["label"] == "region_only (%)"
    finally:
        unregister_metric("region_only")


def test_win_within_is_computed_by_metrics():
    ev = {"a": {"average_drop": {"per_image": [10.0, 50.0, None]}},
          "b": {"average_drop": {"per_image": [20.0, 50.0, 5.0]}}}
    got = win_within(ev, ["a", "b"])
    assert got["a"]["per_image"] == [100.0, 50.0, 0.0] and got["b"]["per_image"] == [0.0, 50.0, 100.0]
    assert got["a"]["value"] == pytest.approx(50.0) and got["a"]["n"] == 3
    assert win_within({"a": {}}, ["a"]) == {}


def test_bad_descriptions_are_refused():
    with pytest.raises(ValueError, match="category"):
        register_metric("m1", gini, category="speed", direction="higher")
    with pytest.raises(ValueError, match="direction"):
        register_metric("m1", gini, category="complexity", direction="up")
    with pytest.raises(ValueError, match="map kind"):
        register_metric("m1", gini, category="complexity", direction="higher", kinds=("voxel",))
    with pytest.raises(ValueError, match="already registered"):
        register_metric("deletion", gini, category="complexity", direction="higher")
    with pytest.raises(TypeError, match="callable"):
        register_metric("m1", 3, category="complexity", direction="higher")
    with pytest.raises(ValueError, match="unknown metric"):
        get_metric("m1")


def test_max_sensitivity_without_a_reexplainer_names_what_to_give(setup):
    model, x, exps = setup
    with pytest.raises(ValueError, match="explain_fn"):
        evaluate(model, x, {"gradcam": exps["gradcam"]}, metrics=["max_sensitivity"],
                 max_sensitivity={"n_samples": 1})
