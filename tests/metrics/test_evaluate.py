"""``evaluate``: one clean pass, the given maps only, JSON-ready results that agree with the metric functions."""
from __future__ import annotations

import json
import math

import pytest
import torch

from interpretorch.attribution import layer_cams, reexplainers
from interpretorch.explanation import Explanation
from interpretorch.metrics import (ALL_METRICS, METRIC_INFO, confidence, deletion, evaluate, get_metric, infidelity,
                                   insertion, pointing_game, road)
from interpretorch.models import TinyCNN

from metric_models import Counting


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.randn(3, 3, 16, 16)
    exps = layer_cams(model, x, ["gradcam", "gradcam++"], layer="features")
    exps["random"] = Explanation(maps=torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1)),
                                 method="random", target=exps["gradcam"].target)
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0], [4.0, 4.0, 12.0, 12.0], [8.0, 0.0, 16.0, 6.0]])
    return model, x, exps, boxes


OPTS = dict(deletion={"step": 0.25}, insertion={"step": 0.25}, road={"percentages": [30, 60]},
            infidelity={"n_perturb": 3}, pointing_game={"tolerance": 2})


def test_results_are_json_and_agree_with_the_metric_functions(setup):
    model, x, exps, boxes = setup
    res = evaluate(model, x, exps, boxes=boxes, **OPTS)
    json.dumps(res, allow_nan=False)
    assert list(res) == ["gradcam", "gradcam++", "random"]
    r = res["gradcam"]
    assert set(r) == {"target", "average_drop", "increase_in_confidence", "win", "deletion", "insertion",
                      "road_morf", "road_lerf", "pointing_game", "energy_pointing_game", "infidelity"}
    assert all(k in METRIC_INFO for k in r if k != "target")
    e = exps["gradcam"]
    assert r["target"] == e.target.tolist()
    c = confidence(model, x, e)
    assert r["average_drop"]["value"] == pytest.approx(c.average_drop, rel=1e-6)
    assert r["increase_in_confidence"]["value"] == pytest.approx(c.increase_in_confidence)
    d = deletion(model, x, e, step=0.25)
    assert r["deletion"]["per_image"] == pytest.approx(d.auc.tolist(), rel=1e-6)
    assert r["deletion"]["x"] == [0.0, 0.25, 0.5, 0.75, 1.0] and len(r["deletion"]["curves"]) == 3
    assert r["insertion"]["curve"] == pytest.approx(insertion(model, x, e, step=0.25).scores.mean(0).tolist())
    rd = road(model, x, e, percentages=[30, 60])
    assert r["road_morf"]["curve"] == pytest.approx(rd.curve("morf").tolist())
    assert r["road_lerf"]["score_curve"] == pytest.approx(rd.lerf_scores.mean(0).tolist())
    assert r["pointing_game"]["per_image"] == pointing_game(e, boxes=boxes, tolerance=2).tolist()
    assert r["infidelity"]["per_image"] == pytest.approx(infidelity(model, x, e, n_perturb=3).tolist(), rel=1e-5)
    # Win: the shares of the three methods add up to 100 on every image.
    wins = torch.tensor([res[m]["win"]["per_image"] for m in res])
    assert torch.allclose(wins.sum(0), torch.full((3,), 100.0))


def test_one_clean_pass_and_batched_perturbations(setup):
    model, x, exps, boxes = setup
    counted = Counting(model)
    evaluate(counted, x, exps, boxes=boxes, batch_size=64, **OPTS)
    b, m = 3, len(exps)
    per_method = b + 4 * b + 4 * b + 2 * 2 * b + 3 * b  # confidence, deletion, insertion, ROAD, infidelity
    assert counted.rows == b + m * per_method
    # Everything is batched: each metric is one model call per method here (all rows fit in 64).
    assert counted.calls == 1 + m * 5


def test_given_clean_outputs_skip_the_clean_pass_and_give_the_same_numbers(setup):
    model, x, exps, boxes = setup
    counted = Counting(model)
    plain = evaluate(counted, x, exps, boxes=boxes, batch_size=64, **OPTS)
    rows = counted.rows
    counted.rows = counted.calls = 0
    with torch.no_grad():
        clean = model(x)
    reused = evaluate(counted, x, exps, boxes=boxes, batch_size=64, outputs=clean, **OPTS)
    assert counted.rows == rows - len(x) and counted.calls == len(exps) * 5
    assert json.dumps(reused, sort_keys=True) == json.dumps(plain, sort_keys=True)
    with pytest.raises(ValueError, match="clean outputs hold 2 rows for 3 images"):
        evaluate(model, x, exps, outputs=clean[:2], metrics=["deletion"], **OPTS)


def test_never_recomputes_explanations(setup, monkeypatch):
    import interpretorch.attribution.cam as cam
    import interpretorch.attribution.registry as registry

    model, x, exps, boxes = setup

    def forbidden(*a, **k):
        raise AssertionError("evaluate recomputed an explanation")

    monkeypatch.setattr(registry, "explain", forbidden)
    monkeypatch.setattr(registry.MethodSpec, "__call__", forbidden)
    monkeypatch.setattr(cam, "layer_cams", forbidden)
    res = evaluate(model, x, exps, boxes=boxes, **OPTS)
    assert res["gradcam"]["deletion"]["value"] is not None


def test_max_sensitivity_uses_the_registry_or_the_given_function(setup):
    model, x, exps, _ = setup
    calls = []

    def explain_fn(m, xx, t):
        calls.append(xx.shape[0])
        return layer_cams(m, xx, ["gradcam"], t, layer="features")["gradcam"]

    one = {"gradcam": exps["gradcam"]}
    res = evaluate(model, x, one, metrics=["max_sensitivity"], explain_fn=explain_fn,
                   max_sensitivity={"n_samples": 2, "radius": 0.05})
    assert sum(calls) == 3 * 2
    via_registry = evaluate(model, x, one, metrics=["max_sensitivity"], explain_fn=reexplainers(one),
                            max_sensitivity={"n_samples": 2, "radius": 0.05})
    assert via_registry["gradcam"]["max_sensitivity"]["per_image"] == pytest.approx(
        res["gradcam"]["max_sensitivity"]["per_image"], rel=1e-5)
    assert res["gradcam"]["max_sensitivity"]["value"] > 0


def test_metric_selection_and_errors(setup):
    model, x, exps, boxes = setup
    res = evaluate(model, x, exps, metrics=["deletion", "road-lerf"], deletion={"step": 0.5},
                   road={"percentages": [50], "order": "lerf"})
    assert set(res["random"]) == {"target", "deletion", "road_lerf"}
    res = evaluate(model, x, exps, metrics="all", **{k: v for k, v in OPTS.items() if k != "pointing_game"},
                   max_sensitivity={"n_samples": 1}, faithfulness_correlation={"nr_runs": 4, "subset_size": 20},
                   monotonicity_correlation={"nr_samples": 2, "features_in_step": 64},
                   average_sensitivity={"n_samples": 2}, local_lipschitz_estimate={"n_samples": 2},
                   smooth_mprt={"nr_samples": 2}, continuity={"nr_steps": 2},
                   sensitivity_n={"features_in_step": 64},
                   **{m: {"n_samples": 2} for m in ("relative_input_stability", "relative_output_stability",
                                                    "relative_representation_stability")},
                   **{m: {"features_in_step": 64} for m in ("faithfulness_estimate", "monotonicity", "pixel_flipping",
                                                            "non_sensitivity")},
                   explain_fn={m: (lambda mm, xx, t: Explanation(
                       maps=torch.rand(xx.shape[0], 16, 16), method="r")) for m in exps})
    objects = {m for m in ALL_METRICS if "objects" in get_metric(m).needs}  # the pointing games, ...
    assert {"pointing_game", "energy_pointing_game"} <= objects
    assert set(res["gradcam"]) - {"target"} == set(ALL_METRICS) - {"road"} - objects | {"road_morf", "road_lerf"}
    with pytest.raises(ValueError, match="need boxes= or masks="):
        evaluate(model, x, exps, metrics=["pointing_game"])
    with pytest.raises(ValueError, match="did you mean deletion"):
        evaluate(model, x, exps, metrics=["delet"])
    with pytest.raises(ValueError, match="unknown option"):
        evaluate(model, x, exps, step=0.1)
    with pytest.raises(ValueError, match="explains classes"):
        evaluate(model, x, exps, target=(exps["gradcam"].target + 1) % 4, metrics=["deletion"])
    with pytest.raises(TypeError, match="not an Explanation"):
        evaluate(model, x, {"raw": torch.rand(3, 16, 16)})


def test_masks_and_missing_objects(setup):
    model, x, exps, _ = setup
    masks = torch.zeros(3, 16, 16, dtype=torch.bool)
    masks[0, :8, :8] = True
    masks[1, 4:12, 4:12] = True  # image 2 has no object
    res = evaluate(model, x, exps, masks=masks, metrics=["pointing_game", "energy_pointing_game"])
    pg = res["gradcam"]["pointing_game"]
    assert pg["per_image"][2] is None
    assert pg["value"] == pytest.approx((pg["per_image"][0] + pg["per_image"][1]) / 2)
    json.dumps(res, allow_nan=False)
    assert not math.isnan(res["random"]["energy_pointing_game"]["value"])


def test_evaluate_leaves_the_model_unchanged(setup, snapshot):
    model, x, exps, boxes = setup
    model.train()
    snap = snapshot(model)
    evaluate(model, x, exps, boxes=boxes, **OPTS)
    snap.assert_unchanged()
