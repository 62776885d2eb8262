"""Each page's headline and red flags built from hand-made results: the situations the issue lists produce the
right sentence in the JSON structure and at the top of the page."""
from __future__ import annotations

import json

import numpy as np
import torch

from interpretorch.explanation import Explanation
from interpretorch.report import write_report
from interpretorch.report.answer import answer_html, colorbar_html
from interpretorch.run import MethodRun, RunResult


def _codes(flags):
    return [f["code"] for f in flags]


def test_explain_flags_low_confidence_and_identical_maps_with_the_reason(tmp_path):
    h = w = 8
    a = torch.rand(2, h, w, generator=torch.Generator().manual_seed(0))
    maps = {"gradcam": a, "xgradcam": 2 * a, "hirescam": a.clone(), "eigencam": torch.rand(2, h, w)}
    methods = {m: MethodRun(m, Explanation(v, m, target=torch.tensor([0, 1])), {}, 0.1) for m, v in maps.items()}
    preds = [[{"index": 1, "name": "barbell", "prob": 0.14}], [{"index": 0, "name": "espresso", "prob": 0.82}]]
    r = RunResult(inputs=torch.zeros(2, 3, h, w), names=["astronaut", "coffee"], predictions=preds, methods=methods,
                  target="top1", layer=None, class_names=["espresso", "barbell"], display=torch.zeros(2, 3, h, w))
    page = write_report(r, tmp_path).read_text()
    res = json.loads((tmp_path / "results.json").read_text())
    assert _codes(res["flags"]) == ["low_confidence", "identical_maps"]
    low, same = res["flags"]
    assert low["images"] == ["astronaut"] and "astronaut (barbell, p = 0.14)" in low["text"]
    assert same["methods"] == ["gradcam", "xgradcam", "hirescam"] and "global average pooling" in same["reason"]
    assert "astronaut \u2192 barbell (p = 0.14)" in res["headline"]
    # the answer comes first: headline and flags above the first image and the timing table
    assert page.index("Low confidence") < page.index("<h2") and page.index("<h2>Time</h2>") > page.index("coffee")


def test_sanity_step_with_undefined_values_reduces_n_and_says_so():
    from interpretorch.sanity.report import sanity_answer

    verdict = {"passes": True, "metric": "spearman_abs", "threshold": 0.5, "by_step": "c", "by_step_index": 2,
               "value": 0.3, "fell_below_at": "b"}
    rows = [[0.9, 0.4, None], [0.8, 0.3, None], [0.7, 0.2, 0.1], [0.9, 0.3, None]]
    data = {"mode": "cascading", "steps": ["a", "b", "c"],
            "methods": {"gradcam": {"spearman_abs": {"per_image": rows}, "verdict": verdict}}}
    headline, flags = sanity_answer(data)
    assert "gradcam passes" in headline and "at c, n = 1" in headline  # the lowest mean (0.1) rests on one image
    undefined = next(f for f in flags if f["code"] == "undefined_steps")
    assert undefined["steps"] == ["c"] and undefined["defined"] == [1] and "1 of 4" in undefined["text"]
    # a verdict whose interval contains the threshold is flagged as uncertain
    verdict2 = {**verdict, "by_step": "b", "by_step_index": 1}
    rows2 = [[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.9, 0.7]]
    data2 = {"mode": "cascading", "steps": ["a", "b"],
             "methods": {"gradient": {"spearman_abs": {"per_image": rows2}, "verdict": verdict2}}}
    _, flags2 = sanity_answer(data2)
    assert _codes(flags2) == ["verdict_uncertain"] and flags2[0]["n"] == 4


def _ablation(kind, removed, band, ace, ace_band, units):
    return {"kind": kind, "units": units, "samples": 40, "present": 40, "removed": removed,
            "removed_band95": band, "ace": ace, "ace_band95": ace_band}


def test_gan_random_units_beating_concept_units_raise_flags():
    from interpretorch.gan.report import intervention_answer

    ci = {"concept": "brick", "layer": "layer4", "k": 8,
          "ablations": [_ablation("top", 0.329, [0.25, 0.41], -0.002, [-0.07, 0.07], [1, 2]),
                        _ablation("random", 0.717, [0.6, 0.8], -0.1, [-0.2, -0.05], [5, 6])],
          "insertion": {"fraction_new_inside_region": 0.08, "region_share_of_image": 0.25}}
    headline, flags = intervention_answer(ci, {1: 0.007, 2: 0.004, 5: 0.0, 6: 0.0}, 0.04)
    assert "removes 32.9% [25.0, 41.0]" in headline and "8 random units 71.7%" in headline
    assert _codes(flags) == ["random_beats_targeted", "insertion_outside", "includes_zero", "below_detector"]
    good = {**ci, "ablations": [_ablation("top", 0.92, [0.83, 0.97], -0.3, [-0.4, -0.2], [1]),
                                _ablation("random", 0.15, [0.1, 0.2], -0.01, [-0.02, -0.005], [5])],
            "insertion": {"fraction_new_inside_region": 0.8, "region_share_of_image": 0.25}}
    assert intervention_answer(good, {1: 0.3}, 0.04)[1] == []


def test_dissect_layer_flags_top_images_without_a_region():
    from interpretorch.dissect.report import layer_answer

    s = {"layer": "conv3", "units": 16, "detectors": 2, "iou_threshold": 0.04, "unique_concepts": 2}
    units = [{"unit": 0, "iou": 0.08, "empty_regions": 2}, {"unit": 1, "iou": 0.05, "empty_regions": 0}]
    headline, flags = layer_answer(s, 60, units)
    assert headline.startswith("conv3: 2 of 16 units are detectors") and "60 image(s)" in headline
    assert _codes(flags) == ["empty_regions"] and flags[0]["units"] == [0]
    assert _codes(layer_answer({**s, "detectors": 0}, 60, [])[1]) == ["no_detectors"]


def test_text_answer_flags_a_flat_rollout_and_names_top_words():
    from interpretorch.transformers.report import text_answer

    res = {"similarity": 0.741, "sentences": [{"text": "a cat", "methods": {
        "integrated_gradients": {"tokens": ["a", "cat"], "scores": [0.1, 0.5]},
        "rollout": {"tokens": ["a", "cat"], "scores": [0.024, 0.036]}}}]}
    headline, flags = text_answer(res)
    assert headline.startswith("The cosine similarity of the two sentences is 0.741") and "cat, a" in headline
    assert _codes(flags) == ["flat_scores"] and "rollout on sentence 1" in flags[0]["text"]


def test_answer_block_escapes_and_says_when_nothing_was_raised():
    html = answer_html("<b>x</b> wins", [{"code": "c", "text": "a < b"}, None, "plain"])
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "a &lt; b" in html and html.count("<li>") == 2
    assert "No red flags" in answer_html("fine", [])
    bar = colorbar_html(-2.0, 2.0, "bwr", "signed")
    assert "<span>-2</span><span>0</span><span>2</span>" in bar and "linear-gradient" in bar
    assert colorbar_html(0.0, 3.0).count("<span>") == 2  # an unsigned bar has its two ends only


def test_concept_map_scale_starts_at_zero_or_is_symmetric(tmp_path):
    from interpretorch.concepts.report import concept_map_figure

    imgs = torch.rand(2, 3, 8, 8)
    pos = concept_map_figure(imgs, torch.rand(2, 8, 8) + 1.0, "t", tmp_path / "a.png")
    assert "<span>0</span>" in pos["cbar"] and "0 to its maximum" in pos["cbar"]
    signed = torch.linspace(-1, 3, 64).reshape(1, 8, 8).repeat(2, 1, 1)
    sym = concept_map_figure(imgs, signed, "t", tmp_path / "b.png")
    s99 = float(np.percentile(np.abs(signed.numpy()), 99))
    assert f"<span>-{s99:.3g}</span><span>0</span><span>{s99:.3g}</span>" in sym["cbar"]
    assert (tmp_path / "a.png").exists() and (tmp_path / "b.png").exists()
