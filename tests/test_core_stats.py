"""The statistics layer (core/stats.py) against scipy and hand computations."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from interpretorch.core.stats import (adjust_p, bootstrap_ci, cis_overlap, cohens_dz, correction_note,
                                      detectable_difference, direction_label, mean_ci, paired_test,
                                      precision_note, rank_biserial, t_interval, two_sample_t, winner)


def test_mean_ci_is_scipys_t_interval():
    x = [0.2, 0.5, 0.4, 0.9, 0.3]
    res = mean_ci(x)
    ref = stats.t.interval(0.95, 4, loc=np.mean(x), scale=stats.sem(x))
    assert res["n"] == 5 and res["interval"] == "t"
    assert (res["ci_low"], res["ci_high"]) == pytest.approx(ref, rel=1e-12)
    assert res["sd"] == pytest.approx(np.std(x, ddof=1))
    assert mean_ci([0.4])["ci_low"] is None and mean_ci([0.4])["n"] == 1
    assert t_interval(1.0, 2.0, 1) is None


def test_bootstrap_ci_equals_scipy_percentile_bootstrap():
    x = np.random.default_rng(3).exponential(size=30)
    ours = bootstrap_ci(x, n_resamples=2000, seed=7, batch=2000)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, batch=2000, method="percentile",
                          random_state=np.random.default_rng(7), vectorized=True).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), rel=1e-12)


def test_holm_bonferroni_bh_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; running max 0.02, 0.03, 0.06, 0.06
    assert adjust_p(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # BH: sorted times 4/rank = 0.02, 0.02, 0.04, 0.04; running min from the top keeps them
    assert adjust_p(p, "bh") == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert adjust_p([0.5, 0.9], "holm") == pytest.approx([1.0, 1.0])  # capped at 1
    assert adjust_p([0.2, None, 0.01]) == pytest.approx([0.2, None, 0.02])  # None is not a test
    assert adjust_p(p, "none") == pytest.approx(p)
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_p(p, "sidak")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adjust_p([1.5])
    assert "Holm" in correction_note("holm", 6) and "6 tests" in correction_note("holm", 6)


def test_paired_wilcoxon_and_t_equal_scipy_with_effect_sizes():
    rng = np.random.default_rng(0)
    a = rng.normal(size=15)
    b = a - 0.5 + rng.normal(scale=0.3, size=15)
    w = paired_test(a, b)
    ref = stats.wilcoxon(a, b)
    assert w["p_value"] == ref.pvalue and w["statistic"] == ref.statistic and w["n"] == 15
    d = a - b
    r = stats.rankdata(np.abs(d))
    assert w["effect_size"] == pytest.approx((r[d > 0].sum() - r[d < 0].sum()) / r.sum())
    t = paired_test(a, b, test="t")
    ref_t = stats.ttest_rel(a, b)
    assert t["p_value"] == pytest.approx(ref_t.pvalue) and t["statistic"] == pytest.approx(ref_t.statistic)
    assert t["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1)) and t["effect_size_name"] == "Cohen's d_z"
    assert (t["ci_low"], t["ci_high"]) == pytest.approx(tuple(ref_t.confidence_interval()))
    assert paired_test(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="one length"):
        paired_test(a, b[:3])
    with pytest.raises(ValueError, match="unknown paired test"):
        paired_test(a, b, test="sign")


def test_effect_sizes_by_hand():
    # |d| ranks 1, 2, 3, 4; positives hold 1 + 3 + 4 = 8, negatives 2: (8 - 2) / 10
    assert rank_biserial([1.0, -2.0, 3.0, 4.0]) == pytest.approx(0.6)
    assert rank_biserial([0.0, 0.0]) is None
    assert cohens_dz([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert cohens_dz([1.0, 1.0]) is None


def test_two_sample_t_equals_scipy_and_handles_constants():
    a, b = [0.1, 0.2, 0.15, 0.05], [0.5, 0.6, 0.4, 0.55]
    assert two_sample_t(a, b) == pytest.approx(stats.ttest_ind(a, b).pvalue)
    assert two_sample_t([0.5, 0.5], [0.5, 0.5]) == 1.0 and two_sample_t([0, 0], [1, 1]) == 0.0


def test_direction_label_and_winner():
    assert direction_label(0.3, 0.001) == "significantly above random"
    assert direction_label(-0.3, 0.001) == "significantly below random"
    assert direction_label(-0.3, 0.2) == "not significant"
    assert direction_label(0.3, 0.049, reference="chance") == "significantly above chance"
    assert winner("a", "b", 0.2, 0.01, "higher") == "a"
    assert winner("a", "b", 0.2, 0.01, "lower") == "b"
    assert winner("a", "b", 0.2, 0.5, "higher") == "no winner"
    assert winner("a", "b", 0.2, None) == "no winner"


def test_precision_note_and_detectable_difference_and_overlap():
    assert precision_note(0.01, -0.1, 0.12) is not None
    assert precision_note(0.5, 0.4, 0.6) is None
    # (1.959964 + 0.841621) * 0.1 * sqrt(2 / 10) = 0.12530
    assert detectable_difference(0.1, 10) == pytest.approx(0.12530, abs=1e-4)
    assert cis_overlap((0, 1), (0.5, 2)) and not cis_overlap((0, 1), (1.5, 2)) and cis_overlap(None, (0, 1))


def test_separated_best_needs_non_overlapping_t_intervals():
    from interpretorch.core.stats import separated_best

    # the case: 0.176 vs 0.173, sd 0.2, n = 3: the intervals overlap, nothing is best
    assert separated_best({"a": (0.176, 0.2, 3), "b": (0.173, 0.2, 3)}, "higher") is None
    # t_{0.975, 9} * 0.01 / sqrt(10) = 0.0072: [0.79, 0.81] and [0.49, 0.51] are apart
    assert separated_best({"a": (0.8, 0.01, 10), "b": (0.5, 0.01, 10)}, "higher") == "a"
    assert separated_best({"a": (0.8, 0.01, 10), "b": (0.5, 0.01, 10)}, "lower") == "b"
    assert separated_best({"a": (0.8, 0.01, 1), "b": (0.5, 0.01, 10)}, "higher") is None  # n = 1: no interval
    assert separated_best({"a": (0.8, 0.01, 10)}, "higher") is None


def test_spearman_matches_scipy_and_refuses_degenerate_samples():
    from scipy.stats import spearmanr

    from interpretorch.core.stats import spearman

    a, b = [0.1, 0.4, 0.3, 0.9, 0.7, 0.2], [1.0, 3.0, 2.5, 4.0, 5.0, 0.5]
    ref = spearmanr(a, b)
    got = spearman(a, b)
    assert got["n"] == 6 and got["rho"] == pytest.approx(ref.statistic) and got["p_value"] == pytest.approx(ref.pvalue)
    assert spearman([1, 2], [3, 4])["rho"] is None and spearman([1, 1, 1], [1, 2, 3])["p_value"] is None
