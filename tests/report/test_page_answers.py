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
    assert "gradcam passes" in headline and "at c, n = 1, no interval" in headline  # the lowest mean rests on one image
    assert "single_image" in _codes(flags)
    undefined = next(f for f in flags if f["code"] == "undefined_steps")
    assert undefined["steps"] == ["c"] and undefined["defined"] == [1] and "1 of 4" in undefined["text"]
    # a verdict whose interval contains the threshold is flagged as uncertain
    verdict2 = {**verdict, "by_step": "b", "by_step_index": 1}
    rows2 = [[0.9, 0.1], [0.8, 0.9], [0.7, 0.2], [0.9, 0.7]]
    data2 = {"mode": "cascading", "steps": ["a", "b"],
             "methods": {"gradient": {"spearman_abs": {"per_image": rows2}, "verdict": verdict2}}}
    head2, flags2 = sanity_answer(data2)
    assert _codes(flags2) == ["verdict_uncertain"] and flags2[0]["n"] == 4
    rows3 = [[0.9, -0.9], [0.8, 0.9], [0.7, -0.95], [0.9, -0.9]]  # the t interval would reach below -1
    data3 = {**data2, "methods": {"gradcam": {"spearman_abs": {"per_image": rows3}, "verdict": verdict2}}}
    assert "95% CI [-1.00," in sanity_answer(data3)[0]


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


def test_dataset_summary_flags_a_deletion_auc_that_follows_confidence_and_an_inverted_road():
    from interpretorch.datasets.summary import summarize

    n = 12
    prob = list(np.linspace(0.05, 0.95, n))
    table = {"image": list(range(n)), "path": [f"{i}.png" for i in range(n)], "method": ["gradcam"] * n,
             "error": [None] * n, "target": [1] * n, "pred": [1] * n, "pred_prob": prob,
             "deletion": [0.5 * p + 0.01 * (i % 3) for i, p in enumerate(prob)],  # follows the confidence
             "road_morf": [0.7] * n, "road_lerf": [0.6] * n}
    s = summarize(table, ["gradcam"], ["deletion", "road_morf", "road_lerf"], n_resamples=100)
    codes = _codes(s["flags"])
    assert codes == ["road_order", "follows_confidence"]
    assert s["flags"][1]["n"] == n and s["flags"][1]["rho"] > 0.9
    shuffled = {**table, "deletion": list(np.random.default_rng(0).permutation(table["deletion"]))}
    assert "follows_confidence" not in _codes(summarize(shuffled, ["gradcam"], ["deletion"], n_resamples=100)["flags"])


def _generation(matrices, target="logprob"):
    return {"model": "m", "text": "x", "target": target, "input_tokens": ["<bos>", "cat", "dog"],
            "output_tokens": ["neko", "inu"], "n_source": 0, "row_tokens": ["neko", "inu"], "scores": [-0.1, -0.2],
            "logprobs": [-0.1, -0.2], "methods": {m: {"matrix": mat} for m, mat in matrices.items()}}


def test_generation_flags_methods_that_disagree_and_rollout_and_heads_the_page(tmp_path):
    from interpretorch.transformers.report import generation_answer, write_generation_report

    ig = [[0.0, 3.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.5, 0.0]]  # 'cat' on both rows: 4 of 6 = 67%
    ab = [[0.0, 0.1, -2.0, 0.0, 0.0], [0.0, 1.0, 0.2, 0.1, 0.0]]  # 'dog' (2.2 of 3.4) on row 0, then 'cat'
    head, flags = generation_answer(_generation({"integrated_gradients": ig, "ablation": ab}))
    assert "integrated_gradients 'cat' (67% of its |attribution|)" in head and "ablation 'dog' (65%" in head
    assert _codes(flags) == ["methods_disagree"] and flags[0]["rows"] == [0] and flags[0]["n"] == 2
    agree = generation_answer(_generation({"integrated_gradients": ig, "ablation": ig}))[1]
    assert agree == []
    rollout = [[0.5, 0.3, 0.2, 0.0, 0.0], [0.4, 0.3, 0.2, 0.1, 0.0]]
    res = _generation({"integrated_gradients": ig, "rollout": rollout})
    page = write_generation_report(res, tmp_path).read_text()
    data = json.loads((tmp_path / "results.json").read_text())
    assert _codes(data["flags"]) == ["methods_disagree", "ignores_target"]  # <bos> vs cat on both rows
    assert "rollout '<bos>' (45%" in data["headline"]
    assert page.index('class="answer"') < page.index("<h2>") and "Ignores the target" in page
    assert page.count('class="cbar"') == 2  # one colour bar per matrix


def _crp_image(name, total, score, top_share, shares):
    return {"name": name, "target": 3, "class_name": "cat", "score": score, "total": total, "top_channel": 7,
            "top_share": top_share, "conditions": [{"label": f"channel {c}", "condition": c, "relevance": s * total,
                                                    "share": s} for c, s in shares]}


def test_crp_flags_unconserved_relevance_and_a_small_top_share():
    from interpretorch.concepts.report import crp_answer

    data = {"layer": "features.10", "images": [_crp_image("a.png", 1.0, 1.02, 0.6, [(7, 0.6), (2, 0.3)]),
                                               _crp_image("b.png", 0.4, 1.0, 0.06, [(7, 0.06)])]}
    head, flags = crp_answer(data)
    assert head.startswith("Share of the class relevance at features.10") and "a.png (cat): channel 7 60%, " \
        "channel 2 30%" in head
    assert _codes(flags) == ["not_conserved", "small_share"]  # a.png is within 5%; b.png is neither
    assert flags[0]["what"] == "b.png" and "off by 60%" in flags[0]["text"] and flags[1]["share"] == 0.06
    both = {**data, "images": [_crp_image("a.png", 0.5, 1.0, 0.6, [(7, 0.6)]), data["images"][1]]}
    merged = crp_answer(both)[1]  # one flag for the two images, each image's numbers kept
    assert _codes(merged) == ["not_conserved", "small_share"] and [i["what"] for i in merged[0]["images"]] == [
        "a.png", "b.png"] and "1 more of the 2 images (b.png)" in merged[0]["text"]


def test_craft_flags_an_importance_above_one_and_few_images():
    from interpretorch.concepts.report import craft_answer

    data = {"target": 2, "layer": "features", "options": {"nb_design": 8},
            "concepts": [{"name": "c0", "importance": 1.08, "importance_std": 0.2, "sub_concepts": []},
                         {"name": "c1", "importance": 0.3, "importance_std": 0.1,
                          "sub_concepts": [{"name": "c1.0", "importance": -0.01}]}]}
    head, flags = craft_answer(data, 4)
    assert "c0 1.08 \u00b1 0.20; c1 0.30 \u00b1 0.10" in head and "4 image(s), 8 designs" in head
    assert _codes(flags) == ["estimate_out_of_range", "few_images"]
    assert flags[0]["values"] == {"c0": 1.08, "c1.0": -0.01} and "8 designs" in flags[0]["text"]
    fine = {**data, "concepts": [{"name": "c1", "importance": 0.3, "importance_std": 0.1, "sub_concepts": []}]}
    assert craft_answer(fine, 20)[1] == []


def _point(x, det, uniq, images=60):
    return {"x": x, "name": f"alpha {x:g}", "folder": f"alpha_{x:g}", "images": images,
            "layers": {"conv4": {"units": 64, "detectors": det, "unique_concepts": uniq, "iou_threshold": 0.04,
                                 "detectors_per_category": {"color": det}, "unique_concepts_per_category":
                                     {"color": uniq}}}}


def test_rotation_page_says_one_draw_and_flags_counts_that_do_not_fall(tmp_path):
    from interpretorch.dissect.report import compare_answer, write_compare_report, write_series_report

    page = write_series_report([_point(0, 5, 3), _point(1, 6, 3)], tmp_path, "rotation", x_label="alpha",
                               title="t", meta="m", seed=7).read_text()
    data = json.loads((tmp_path / "rotation.json").read_text())
    assert "conv4 5 \u2192 6 of 64 (rises" in data["headline"]
    assert _codes(data["flags"]) == ["one_draw", "no_fall"] and data["flags"][0]["seed"] == 7
    assert page.index("One draw") < page.index("<h2>Counts</h2>")
    falls = write_series_report([_point(0, 5, 3), _point(1, 1, 1)], tmp_path, "rotation", x_label="alpha",
                                title="t", meta="m", seed=7)
    assert falls.exists() and _codes(json.loads((tmp_path / "rotation.json").read_text())["flags"]) == ["one_draw"]
    write_series_report([_point(0, 1, 1), _point(1000, 5, 3)], tmp_path, "checkpoints", x_label="step", title="t",
                        meta="m")
    ck = json.loads((tmp_path / "checkpoints.json").read_text())
    assert ck["flags"] == [] and "conv4 1 \u2192 5 of 64 (rises" in ck["headline"]
    a, b = _point(0, 5, 3), _point(0, 2, 2, images=30)
    runs = [("a", {"images": 60, "layers": a["layers"]}), ("b", {"images": 30, "layers": b["layers"]})]
    head, flags = compare_answer(runs, [{"iou_threshold": 0.04, "images": 60}, {"iou_threshold": 0.04, "images": 30}])
    assert head.startswith("Most unique concepts per run: a at conv4 (3 unique")
    assert _codes(flags) == ["settings_differ"]
    html = write_compare_report(runs, tmp_path).read_text()
    assert "Different numbers of images (30, 60)" in html.split("<h2>")[0]


def test_relevance_page_headline_counts_shared_images_and_flags_units_never_supporting():
    from interpretorch.dissect.report import relevance_answer

    rows = [{"unit": 0, "relevance": [0.5, 0.2], "relevance_images": [1, 2], "activation_images": [2, 3]},
            {"unit": 4, "relevance": [-0.1, -0.3], "relevance_images": [5, 6], "activation_images": [7, 8]}]
    head, flags = relevance_answer("conv1", 40, rows)
    assert "share 0.5 image(s) per unit on average (from 0 to 1, 2 unit(s)); 1 unit(s) share none" in head
    assert _codes(flags) == ["no_positive_relevance"] and flags[0]["units"] == [4]
