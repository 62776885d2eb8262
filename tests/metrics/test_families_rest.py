"""The metrics of issue 30 through ``evaluate``: a family name runs them, sensitivity-N's per-step entry, Focus on
the library's mosaics, and the report's grouping by family with each figure's direction."""
from __future__ import annotations

import pytest
import torch

from interpretorch.attribution import explain, reexplainers
from interpretorch.data.synthetic import make_localisation_set
from interpretorch.metrics import evaluate, family, get_metric, make_mosaics, sensitivity_n
from interpretorch.models import TinyCNN
from interpretorch.report.evaluation import evaluation_table


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    exps = {m: explain(model, x, m) for m in ("gradient", "gradcam")}
    return model, x, exps


def test_new_metrics_describe_themselves():
    want = {"sufficiency": ("faithfulness", "higher"), "sensitivity_n": ("faithfulness", "higher"),
            "consistency": ("robustness", "higher"), "continuity": ("robustness", "lower"),
            "relative_input_stability": ("robustness", "lower"), "relative_output_stability": ("robustness", "lower"),
            "relative_representation_stability": ("robustness", "lower"), "focus": ("localisation", "higher"),
            "input_invariance": ("axiomatic", "higher"), "smooth_mprt": ("randomisation", "lower"),
            "efficient_mprt": ("randomisation", "higher"), "random_logit": ("randomisation", "lower")}
    for name, (cat, direction) in want.items():
        f = get_metric(name).figures[0]
        assert (f.category, f.direction) == (cat, direction), name
        assert name in family(cat)
    assert all(not get_metric(n).default for n in want)


def test_evaluate_runs_the_randomisation_and_robustness_families(setup):
    model, x, exps = setup
    res = evaluate(model, x, exps, metrics=["randomisation", "axiomatic", "robustness"],
                   explain_fn=reexplainers(exps), smooth_mprt={"nr_samples": 2}, random_logit={"seed": 1},
                   relative_input_stability={"n_samples": 2}, relative_output_stability={"n_samples": 2},
                   relative_representation_stability={"n_samples": 2}, continuity={"nr_steps": 3},
                   max_sensitivity={"n_samples": 2}, average_sensitivity={"n_samples": 2},
                   local_lipschitz_estimate={"n_samples": 2}, infidelity={"n_perturb": 2})
    for m in exps:
        for name in family("randomisation") + family("axiomatic") + family("robustness"):
            entry = res[m][name]
            assert len(entry["per_image"]) == 4, name
    table = evaluation_table(res, {"gradient": "pixel", "gradcam": "region"})
    cols = [c for g in table["groups"] for c in g["columns"]]
    got = {c["key"]: (c["family"], c["better"]) for c in cols}
    assert got["smooth_mprt"] == ("randomisation", "lower") and got["efficient_mprt"] == ("randomisation", "higher")
    assert got["consistency"] == ("robustness", "higher")


def test_sensitivity_n_entry_is_per_step(setup):
    model, x, exps = setup
    res = evaluate(model, x, {"gradient": exps["gradient"]}, metrics="sensitivity_n",
                   sensitivity_n={"features_in_step": 64, "n_max_percentage": 1.0})
    e = res["gradient"]["sensitivity_n"]
    curve = sensitivity_n(model, x, exps["gradient"], features_in_step=64, n_max_percentage=1.0)
    assert len(e["per_step"]) == 4 and e["n_images"] == 4 and "per_image" not in e
    assert e["value"] == pytest.approx(float(curve[torch.isfinite(curve)].mean()))


def test_focus_on_mosaics_through_evaluate():
    s = make_localisation_set(16, size=16, seed=1)
    mos = make_mosaics(s.images, s.labels, 3, seed=0)
    torch.manual_seed(0)
    model = TinyCNN(num_classes=4).eval()
    exps = {"gradcam": explain(model, mos.images, "gradcam", target=mos.target)}
    res = evaluate(model, mos.images, exps, target=mos.target, masks=mos.masks, metrics="focus")
    vals = res["gradcam"]["focus"]["per_image"]
    assert all(0.0 <= v <= 1.0 for v in vals)
    with pytest.raises(ValueError, match="no class has"):
        make_mosaics(s.images[:2], torch.tensor([0, 1]), 1)
