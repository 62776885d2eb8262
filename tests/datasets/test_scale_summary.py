"""The summary's confidence intervals and paired tests equal scipy's on the same numbers; means, directions
and the win percentage by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from interpretorch.datasets.summary import bootstrap_batch, bootstrap_ci, paired_test, summarize


@pytest.mark.parametrize("n, batch", [(37, None), (500, 64)])
def test_bootstrap_ci_equals_scipy(n, batch):
    x = np.random.default_rng(3).gamma(2.0, 1.5, size=n)
    low, high = bootstrap_ci(x, n_resamples=2000, seed=11, batch=batch)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, method="percentile", confidence_level=0.95,
                          batch=batch or bootstrap_batch(n, 2000), rng=np.random.default_rng(11))
    assert low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert low < x.mean() < high


def test_bootstrap_ci_checks_input():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])


def test_paired_test_equals_scipy_wilcoxon():
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 0.1, 80)
    b = a + rng.normal(0.02, 0.05, 80)
    res = paired_test(a, b)
    ref = stats.wilcoxon(a, b)
    assert res["statistic"] == ref.statistic and res["p_value"] == ref.pvalue and res["n"] == 80
    assert res["mean_difference"] == pytest.approx(np.mean(a - b))
    small = paired_test(a[:12], b[:12])  # exact distribution for small n
    assert small["p_value"] == stats.wilcoxon(a[:12], b[:12]).pvalue
    same = paired_test(a, a)
    assert same["p_value"] == 1.0 and same["note"]


def _table(values: dict[str, list[float | None]], metric: str) -> dict[str, list]:
    rows = {"image": [], "path": [], "method": [], "error": [], metric: []}
    for m, vals in values.items():
        for i, v in enumerate(vals):
            rows["image"].append(i)
            rows["path"].append(f"{i}.png")
            rows["method"].append(m)
            rows["error"].append(None)
            rows[metric].append(v)
    return rows


def test_summarize_means_pairs_and_direction():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.1, 0.3, 40)
    b = a + 0.05 + rng.normal(0, 0.01, 40)  # b deletes worse (higher AUC)
    table = _table({"a": list(a), "b": list(b[:-1]) + [None]}, "deletion")
    s = summarize(table, ["a", "b"], ["deletion"], n_resamples=500, seed=2)
    assert s["table"]["a"]["deletion"]["mean"] == pytest.approx(a.mean())
    assert s["table"]["b"]["deletion"]["n"] == 39
    assert s["table"]["b"]["deletion"]["mean"] == pytest.approx(b[:-1].mean())
    low, high = bootstrap_ci(a, n_resamples=500, seed=2)
    assert (s["table"]["a"]["deletion"]["ci_low"], s["table"]["a"]["deletion"]["ci_high"]) == (low, high)
    pair = s["paired"]["deletion"][0]
    assert (pair["a"], pair["b"], pair["n"]) == ("a", "b", 39)
    assert pair["p_value"] == stats.wilcoxon(a[:-1], b[:-1]).pvalue
    assert pair["better"] == "a"  # lower deletion is better
    s2 = summarize(_table({"a": list(a), "b": list(b)}, "insertion"), ["a", "b"], ["insertion"], n_resamples=100)
    assert s2["paired"]["insertion"][0]["better"] == "b"  # higher insertion is better


def test_win_percentage_is_the_mean_win_share():
    # per-image win shares as evaluate() gives them: 100 to the lowest drop, ties share
    table = _table({"a": [100.0, 50.0, 0.0, 100.0], "b": [0.0, 50.0, 100.0, 0.0]}, "win")
    s = summarize(table, ["a", "b"], ["win"], n_resamples=100)
    assert s["win_percentage"] == {"a": 62.5, "b": 37.5}


def test_no_winner_unless_the_holm_corrected_test_says_so_and_the_json_and_page_carry_corrected_p():
    """a vs b differ at p = 0.55 (no winner); every comparison's p is Holm-corrected over all comparisons shown,
    the winner follows the corrected p, and the page shows the corrected p, the note and the headline."""
    from interpretorch.core.stats import adjust_p
    from interpretorch.datasets.report import _env

    base = np.linspace(0.3, 0.6, 8)
    d_ab = np.array([1, -2, 3, -4, 5, 6, -7, 8]) * 0.01   # Wilcoxon p = 0.547
    d_ac = np.array([1, 2, 3, 4, 5, 6, -0.5, 8]) * 0.01   # p = 0.0156
    vals = {"a": base, "b": base - d_ab, "c": base - d_ac}
    s = summarize(_table({k: list(v) for k, v in vals.items()}, "insertion"), ["a", "b", "c"], ["insertion"],
                  n_resamples=100)
    rows = {(r["a"], r["b"]): r for r in s["paired"]["insertion"]}
    raw = {k: stats.wilcoxon(vals[k[0]], vals[k[1]]).pvalue for k in rows}
    assert rows["a", "b"]["p_value"] == pytest.approx(0.546875)
    assert rows["a", "b"]["winner"] == "no winner" and rows["a", "b"]["better"] is None
    keys = list(rows)
    holm = adjust_p([raw[k] for k in keys])
    for k, p in zip(keys, holm):
        assert rows[k]["p_value"] == raw[k] and rows[k]["p_value_corrected"] == pytest.approx(p)
        assert (rows[k]["winner"] != "no winner") == (p < 0.05)
    # a beats c before correction (0.0156) and after it (3 x 0.0156 = 0.047); higher insertion is better
    assert rows["a", "c"]["winner"] == "a" and rows["a", "c"]["p_value_corrected"] == pytest.approx(3 * 0.015625)
    assert rows["a", "c"]["effect_size"] == pytest.approx((35 - 1) / 36)  # ranks 2..8 positive (35), 1 for -0.5
    assert s["correction"] == {"method": "holm", "tests": 3, "alpha": 0.05, "note": s["correction"]["note"]}
    assert "a beats c" in s["headline"] and "2 of 3 comparisons name no winner" in s["headline"]
    from interpretorch.report.answer import answer_html

    html = _env().get_template("dataset.html").render(s=s, manifest={"data": {}}, figures={}, pages={}, metric=None,
                                                       failed=[], n_failed=0, table_file=None,
                                                       answer=answer_html(s["headline"], s["flags"]))
    assert s["correction"]["note"] in html and "no winner" in html and "p (holm)" in html
    assert html.index("a beats c") < html.index("<table")


def test_a_metric_is_not_compared_across_map_kinds_it_does_not_suit():
    """Average Drop suits region maps only: a CAM against a pixel attribution is refused (with the reason) and left
    out of the correction; two region maps are compared; Deletion (suits both) is compared across kinds."""
    rng = np.random.default_rng(0)
    vals = {m: list(rng.uniform(0, 1, 10)) for m in ("gradcam", "scorecam", "ig")}
    table = _table(vals, "average_drop")
    table["deletion"] = list(table["average_drop"])
    s = summarize(table, ["gradcam", "scorecam", "ig"], ["average_drop", "deletion"], n_resamples=50,
                  kinds={"gradcam": "region", "scorecam": "region", "ig": "pixel"})
    assert [(r["a"], r["b"]) for r in s["paired"]["average_drop"]] == [("gradcam", "scorecam")]
    assert {(r["a"], r["b"]) for r in s["refused"]} == {("gradcam", "ig"), ("scorecam", "ig")}
    assert all(r["metric"] == "average_drop" and "pixel" in r["reason"] for r in s["refused"])
    assert len(s["paired"]["deletion"]) == 3 and s["correction"]["tests"] == 4
