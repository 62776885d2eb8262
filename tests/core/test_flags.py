"""The red-flag rules on hand-made inputs: each fires on the situation it names and stays silent otherwise."""
from __future__ import annotations

import numpy as np
import pytest

from interpretorch.core import flags


def test_low_confidence_names_the_images_below_the_threshold():
    f = flags.low_confidence(["cat", "astronaut", "rocket"], [0.93, 0.14, 0.5], ["tabby", "barbell", "missile"])
    assert f["code"] == "low_confidence" and f["images"] == ["astronaut"] and f["n"] == 3
    assert "astronaut (barbell, p = 0.14)" in f["text"] and "1 of 3" in f["text"]
    assert flags.low_confidence(["cat"], [0.5]) is None  # exactly at the threshold is not low
    with pytest.raises(ValueError, match="one entry per image"):
        flags.low_confidence(["a", "b"], [0.1])


def test_identical_maps_groups_methods_up_to_a_positive_factor_and_gives_the_known_reason():
    rng = np.random.default_rng(0)
    a = rng.random((2, 7, 7))
    maps = {"gradcam": a, "xgradcam": 3.0 * a, "hirescam": a + 1e-9, "gradient": rng.random((2, 7, 7)),
            "layercam": a * np.array([1.0, 2.0])[:, None, None]}  # a factor per image is still the same map
    out = flags.identical_maps(maps)
    assert len(out) == 1
    assert out[0]["methods"] == ["gradcam", "xgradcam", "hirescam", "layercam"]
    assert out[0]["reason"] is None  # layercam is not among the known coincidences
    known = flags.identical_maps({"gradcam": a, "hirescam": 2 * a})
    assert "global average pooling" in known[0]["reason"] and known[0]["n"] == 2
    b = a.copy()
    b[1, 3, 3] += 0.01 * a.max()  # one pixel of one image differs by 1 % of the maximum
    assert flags.identical_maps({"gradcam": a, "hirescam": b}) == []
    assert flags.identical_maps({"gradcam": a, "eigencam": -a}) == []  # a negative factor is another map
    zero = np.zeros((2, 7, 7))
    assert flags.identical_maps({"x": zero, "y": zero}) == []  # all-zero maps are constant_maps' business


def test_constant_maps_lists_the_images_with_one_value():
    m = np.random.default_rng(1).random((3, 4, 4))
    m[1] = 0.0
    m[2] = 0.7
    out = flags.constant_maps({"gradcam": m, "gradient": np.ones((3, 4, 4)) * np.arange(4)}, ["a", "b", "c"])
    assert [f["method"] for f in out] == ["gradcam"] and out[0]["images"] == ["b", "c"]
    assert "2 of 3" in out[0]["text"]


def test_road_order_fires_when_most_relevant_first_is_not_lower():
    f = flags.road_order("integrated_gradients", morf=0.63, lerf=0.56)
    assert f["code"] == "road_order" and "0.63" in f["text"] and "0.56" in f["text"]
    assert flags.road_order("gradcam", morf=0.2, lerf=0.7) is None
    assert flags.road_order("x", morf=0.5, lerf=0.5)["morf"] == 0.5  # a tie ranks no better than the reverse
    assert flags.road_order("x", None, 0.3) is None


def test_undefined_steps_says_how_many_images_remain():
    f = flags.undefined_steps("gradcam's Spearman", [4, 4, 3, 3], 4, ["a", "b", "c", "d"])
    assert f["steps"] == ["c", "d"] and f["defined"] == [3, 3] and "3 of 4" in f["text"]
    assert flags.undefined_steps("x", [4, 4], 4) is None


def test_degenerate_tcav_fires_only_when_every_run_scores_zero_or_one():
    f = flags.degenerate_tcav("_head_act", {"fur": [1.0, 1.0, 0.0], "nose": [0.0, 0.0, 0.0]})
    assert f["code"] == "degenerate_tcav" and f["runs"] == 3 and "1/3" in f["text"]
    assert flags.degenerate_tcav("a", {"fur": [1.0, 0.9, 0.0]}) is None
    assert flags.degenerate_tcav("a", {"fur": [1.0]}) is None  # one run says nothing about degeneracy


def test_random_beats_targeted_and_interval_including_zero():
    f = flags.random_beats_targeted("removing brick", targeted=32.9, random=71.7, unit="%")
    assert f["targeted"] == 32.9 and "71.7%" in f["text"]
    assert flags.random_beats_targeted("x", targeted=0.9, random=0.15) is None
    z = flags.includes_zero("grass ACE", -0.002, -0.07, 0.07)
    assert z["ci"] == [-0.07, 0.07] and "includes 0" in z["text"]
    assert flags.includes_zero("x", 0.5, 0.1, 0.9) is None
    assert flags.includes_zero("x", -0.5, -0.9, -0.1) is None


def test_detector_and_insertion_rules():
    f = flags.below_detector("brick", [0.007, 0.004], 0.04)
    assert f["best_iou"] == 0.007
    assert flags.below_detector("brick", [0.05, 0.001], 0.04) is None
    g = flags.insertion_outside("grass", inside=0.12, region_share=0.25)
    assert g["code"] == "insertion_outside" and "12.0%" in g["text"]
    assert flags.insertion_outside("grass", inside=0.8, region_share=0.25) is None
    assert flags.insertion_outside("sky", inside=0.6, region_share=0.7) is not None  # no better than chance


def test_flag_texts_accepts_strings_and_drops_nones():
    assert flags.flag_texts([None, "a", flags.flag("x", "b")]) == ["a", "b"]


def test_flat_scores_fires_on_scores_of_one_sign_within_a_factor_two():
    f = flags.flat_scores("rollout on 'a cat'", [0.024, 0.036, 0.030])
    assert f["low"] == 0.024 and f["high"] == 0.036 and "1.50" in f["text"]
    assert flags.flat_scores("x", [0.01, 0.05]) is None  # a factor 5 stands out
    assert flags.flat_scores("x", [-0.03, 0.03]) is None  # signed scores are not flat
    assert flags.flat_scores("x", [0.0, 0.03]) is None


def test_same_across_classes_fires_when_another_class_gets_the_same_map():
    a = np.random.default_rng(2).random((2, 5, 5))
    f = flags.same_across_classes("eigencam", a, 0.5 * a, rank=2)
    assert f["rank"] == 2 and f["n"] == 2 and "rank-2" in f["text"]
    assert flags.same_across_classes("gradcam", a, a[::-1].copy(), rank=2) is None
