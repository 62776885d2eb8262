"""Running the checks: the fixed target, the original explained once, verdicts, sanity.json, the caller's model."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from interpretorch.models import TinyCNN
from interpretorch.sanity import VerdictRule, data_randomization, model_randomization, randomized_models
from interpretorch.sanity.checks import cascading_verdicts, decide
from interpretorch.sanity.randomize import randomization_blocks

METRIC_KEYS = {"spearman_abs", "spearman", "ssim", "hog", "topk"}


class CountingLinear(nn.Module):
    """x -> W flatten(x) + b, counting its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x.flatten(1))


def _x(n: int = 3, size: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_step_explains_the_original_class_and_the_original_is_explained_once():
    torch.manual_seed(0)
    model = CountingLinear().eval()
    x = _x()
    r = model_randomization(model, x, ["gradient"], seed=4)
    top1 = model.fc(x.flatten(1)).argmax(1)
    assert torch.equal(r.target, top1)
    # One forward (+ backward) for the original explanation, which also fixes the classes: the caller's model runs
    # once.
    assert model.calls == 1
    # The gradient of a linear model is the weight row of the explained class: the original model's class, also
    # when the randomized model prefers another one.
    (_, work), = list(randomized_models(model, "cascading", randomization_blocks(model), seed=4))
    w = work.fc.weight.detach()
    assert not torch.equal(w, model.fc.weight)
    for i in range(3):
        assert torch.allclose(r.step_maps["gradient"][0][i].flatten(), w[top1[i]])
    assert r.steps == ["fc"] and r.step_blocks == [["fc"]]


def test_sanity_json_has_the_issue_shape(tmp_path):
    model = TinyCNN(num_classes=5).eval()
    r = model_randomization(model, _x(2, 32), ["gradient", "gradcam"], keep_maps=1)
    d = json.loads(json.dumps(r.to_json()))  # JSON-serialisable
    assert d["mode"] == "cascading" and d["steps"] == ["fc", "features.8+features.9", "features.4+features.5",
                                                      "features.0+features.1"]
    assert set(d["methods"]) == {"gradient", "gradcam"}
    for m, e in d["methods"].items():
        assert set(e) == METRIC_KEYS | {"verdict"}
        for k in METRIC_KEYS:
            assert len(e[k]["mean"]) == 4 and len(e[k]["per_image"]) == 2 and len(e[k]["per_image"][0]) == 4
        assert {"passes", "threshold", "metric"} <= set(e["verdict"])
    assert set(d["baselines"]) == {"random", "edge"}
    assert set(d["baselines"]["edge"]["gradcam"]) == METRIC_KEYS
    # The figure's maps are kept for the first image only.
    assert r.original_maps["gradient"].shape == (1, 3, 32, 32) and len(r.step_maps["gradcam"]) == 4


def test_decide_by_hand():
    steps = ["a", "b", "c", "d"]
    vals = torch.tensor([[0.9, 0.7, 0.4, 0.1], [0.9, 0.5, 0.2, 0.1]], dtype=torch.float64)  # means .9 .6 .3 .1
    v = decide(vals, steps, VerdictRule("spearman_abs", 0.5, 0.5))  # by step 2 of 4 ("b"): lowest 0.6
    assert not v.passes and v.by_step == "b" and v.value == pytest.approx(0.6) and v.fell_below_at is None
    v = decide(vals, steps, VerdictRule("spearman_abs", 0.5, "c"))
    assert v.passes and v.fell_below_at == "c" and v.value == pytest.approx(0.3)
    v = decide(vals, steps, VerdictRule("spearman_abs", 0.65, 1))
    assert v.passes and v.fell_below_at == "b"
    nan = torch.full((2, 4), float("nan"), dtype=torch.float64)
    v = decide(nan, steps, VerdictRule())
    assert not v.passes and v.value is None
    with pytest.raises(ValueError, match="not a step"):
        decide(vals, steps, VerdictRule(by_step="z"))
    with pytest.raises(ValueError, match="out of range"):
        decide(vals, steps, VerdictRule(by_step=4))


class _FailingTarget:
    """A callable target that raises on its n-th call (midway through the steps)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError("boom")
        return out[:, 0]


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_callers_model_is_bit_identical_after_every_mode_also_when_it_raises(mode, snapshot):
    model = TinyCNN(num_classes=5).eval()
    model.fc.weight.requires_grad_(False)  # odd flags must survive too
    snap = snapshot(model)
    x = _x(2, 32)
    x0 = x.clone()
    rng = torch.random.get_rng_state()
    model_randomization(model, x, ["gradient", "gradcam"], mode=mode, init="normal", std=0.05,
                        reset_running_stats=True, keep_maps=0)
    snap.assert_unchanged()
    with pytest.raises(RuntimeError, match="boom"):
        model_randomization(model, x, ["gradient"], mode=mode, target=_FailingTarget(4))
    snap.assert_unchanged()
    assert torch.equal(x, x0)
    assert torch.equal(torch.random.get_rng_state(), rng)


def test_data_test_and_its_model_checks(snapshot):
    a, b = TinyCNN(num_classes=5, seed=0).eval(), TinyCNN(num_classes=5, seed=1).eval()
    snaps = [snapshot(a), snapshot(b)]
    r = data_randomization(a, b, _x(2, 32), ["gradient", "gradcam"])
    assert r.mode == "data" and r.steps == ["random labels"]
    assert r.verdicts["gradient"].by_step == "random labels"
    with pytest.raises(RuntimeError, match="boom"):
        data_randomization(a, b, _x(2, 32), ["gradient"], target=_FailingTarget(2))
    for s in snaps:
        s.assert_unchanged()
    same = data_randomization(a, a, _x(2, 32), ["gradient"])
    assert torch.allclose(same.similarity["gradient"]["spearman_abs"], torch.ones(2, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="one architecture"):
        data_randomization(a, CountingLinear(), _x(2, 8), ["gradient"])


def test_bad_arguments_are_named():
    model = TinyCNN(num_classes=5).eval()
    x = _x(2, 32)
    with pytest.raises(ValueError, match="unknown method"):
        model_randomization(model, x, ["gradiant"])
    with pytest.raises(ValueError, match="verdict metric"):
        model_randomization(model, x, ["gradient"], metrics=["ssim"])
    with pytest.raises(ValueError, match="unknown similarity metric"):
        model_randomization(model, x, ["gradient"], metrics=["kendall"])
    with pytest.raises(ValueError, match="got 3 targets for 2 images"):
        model_randomization(model, x, ["gradient"], target=[0, 1, 2])
    with pytest.raises(ValueError, match="batch"):
        model_randomization(model, x[0], ["gradient"])


def test_cascading_verdicts_for_a_badge():
    model = TinyCNN(num_classes=5).eval()
    v = cascading_verdicts(model, _x(2, 32), ["gradient", "gradcam"])
    assert set(v) == {"gradient", "gradcam"} and all(isinstance(x.passes, bool) for x in v.values())


def test_bound_methods_and_a_layer_given_as_a_module():
    from interpretorch import bind

    model = TinyCNN(num_classes=5).eval()
    x = _x(2, 32)
    by_name = model_randomization(model, x, ["gradcam"], layer="features.8", max_steps=1, metrics=["spearman_abs"])
    bound = model_randomization(model, x, [bind("gradcam", layer=model.features[8]), bind("gradient")],
                                max_steps=1, metrics=["spearman_abs"])
    assert bound.methods == ["gradcam", "gradient"] and bound.config["layer"] == "features.8"
    assert torch.equal(bound.similarity["gradcam"]["spearman_abs"], by_name.similarity["gradcam"]["spearman_abs"])
    with pytest.raises(ValueError, match="named twice"):
        model_randomization(model, x, ["gradient", bind("gradient")])
    with pytest.raises(ValueError, match="not among the methods run"):
        model_randomization(model, x, ["gradient"], options={"gradcam": {}})
