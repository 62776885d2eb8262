"""A summary like the papers': per method and metric the mean with a 95% bootstrap confidence interval, paired
Wilcoxon signed-rank tests between methods on the same images with their effect sizes, Holm-corrected over every
comparison shown, and the Grad-CAM++ win percentage. The statistics are :mod:`interpretorch.core.stats`'s.

The interval is the percentile bootstrap of the mean (per-image metric values are bounded and skewed, not
normal), seeded. The tests are ``scipy.stats.wilcoxon`` (two-sided) on the images where both methods have a
value; a comparison names a winner only when its Holm-corrected p-value is below 0.05 ("no winner" otherwise).
A metric that does not suit both methods' map kinds (Average Drop on a pixel attribution against a CAM) is not
compared across the kinds: that comparison is listed as refused, with the reason, and is not in the correction.

Rows that come in clusters (a task run: the several detections or class regions of one image, ``cluster`` naming
the column that holds each row's image) are not independent, so the statistics respect the clustering:

- the interval is the cluster bootstrap (``core.stats.cluster_bootstrap_ci``): images are resampled with
  replacement, each with all its targets, and the mean over the drawn targets taken;
- a paired comparison first averages, within each image, the differences A - B of the targets where both
  methods have a value, and runs the same Wilcoxon test on those per-image means (n counts images). The pairs
  are then independent (one per image), and the test, its effect size and the Holm correction stay those of a
  classifier run; a cluster bootstrap of the mean difference was the alternative, but its p-values are resolved
  only to 1 / resamples, which matters once Holm multiplies the smallest by the number of tests. Each image
  weighs the same in the test whatever its number of targets (the table's means weigh targets).
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from interpretorch.core.stats import (BOOTSTRAP_RESAMPLES, NO_WINNER, adjust_p, bootstrap_batch, bootstrap_ci,
                                      cluster_bootstrap_ci, correction_note, paired_test, winner)
from interpretorch.metrics.evaluate import METRIC_INFO
from interpretorch.metrics.registry import figures

__all__ = ["BOOTSTRAP_RESAMPLES", "bootstrap_batch", "bootstrap_ci", "paired_test", "metric_values", "summarize",
           "cluster_means",
           "summary_lines", "comparison_headline"]
ALPHA = 0.05

def metric_values(table: Mapping[str, list], method: str, metric: str) -> dict[int, float]:
    """{image: value} of one method and metric, only finite values of images that did not fail."""
    out = {}
    vals = table.get(metric)
    if vals is None:
        return out
    for img, m, err, v in zip(table["image"], table["method"], table["error"], vals):
        if m == method and err is None and v is not None and math.isfinite(v):
            out[int(img)] = float(v)
    return out


def summarize(table: Mapping[str, list], methods: Sequence[str], metrics: Sequence[str], *, seed: int = 0,
              n_resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = 0.95,
              kinds: Mapping[str, str] | None = None, correction: str = "holm",
              unit: str = "image(s)", cluster: str | None = None) -> dict[str, Any]:
    """The summary of per-image rows: {"table", "paired", "refused", "headline", "win_percentage", ...}, JSON-ready.

    ``kinds`` maps a method to its map kind ("region", "pixel", ...); a metric that does not suit both kinds of a
    pair is not compared across them. ``unit`` names what the ``image`` column counts in the sentences (a task run
    counts its targets: "detection(s)"). ``cluster`` names the column holding the image each row belongs to, when
    an image has several rows (a task run): intervals resample images and paired tests compare per-image means.
    """
    images = sorted(set(table.get("image", [])))
    failed = sorted({(int(i), p, e) for i, p, e in zip(table.get("image", []), table.get("path", []),
                                                       table.get("error", [])) if e is not None})
    cells: dict[str, dict[str, Any]] = {}
    values = {(m, k): metric_values(table, m, k) for m in methods for k in metrics}
    if cluster is not None and cluster not in table:
        raise ValueError(f"summarize: no column {cluster!r} holds the rows' clusters")
    cluster_of = {} if cluster is None else {int(i): int(c) for i, c in zip(table["image"], table[cluster])}
    for m in methods:
        cells[m] = {}
        for k in metrics:
            v = np.asarray(list(values[m, k].values()), dtype=np.float64)
            if v.size == 0:
                cells[m][k] = {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "std": None}
                if cluster is not None:
                    cells[m][k]["clusters"] = 0
                continue
            if cluster is None:
                low, high = bootstrap_ci(v, confidence=confidence, n_resamples=n_resamples, seed=seed)
            else:
                groups = [cluster_of[i] for i in values[m, k]]
                low, high = cluster_bootstrap_ci(v, groups, confidence=confidence, n_resamples=n_resamples,
                                                 seed=seed)
            cells[m][k] = {"n": int(v.size), "mean": float(v.mean()), "ci_low": low, "ci_high": high,
                           "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
            if cluster is not None:
                cells[m][k]["clusters"] = len(set(groups))
    info = figures()
    kinds = dict(kinds or {})
    paired: dict[str, list[dict[str, Any]]] = {}
    refused: list[dict[str, Any]] = []
    for k in metrics:
        better = METRIC_INFO.get(k, ("", "higher", ""))[1]
        rows = []
        for a, b in combinations(methods, 2):
            ka, kb = kinds.get(a), kinds.get(b)
            fig = info.get(k)
            if ka and kb and ka != kb and fig is not None and not (fig.suits(ka) and fig.suits(kb)):
                unsuited = [x for x in (ka, kb) if not fig.suits(x)]
                refused.append({"metric": k, "a": a, "b": b, "kinds": [ka, kb],
                                "reason": f"{fig.label} does not suit {' or '.join(unsuited)} maps: {a} ({ka}) and "
                                          f"{b} ({kb}) are compared only within their own map kind"})
                continue
            common = sorted(set(values[a, k]) & set(values[b, k]))
            if cluster is None:
                res = paired_test([values[a, k][i] for i in common], [values[b, k][i] for i in common])
            else:
                xa, xb = cluster_means(values[a, k], values[b, k], common, cluster_of)
                res = paired_test(xa, xb)
                res["targets"] = len(common)
            res.update(a=a, b=b, metric=k)
            rows.append(res)
        if rows:
            paired[k] = rows
    every = [r for rows in paired.values() for r in rows]
    for r, p in zip(every, adjust_p([r["p_value"] for r in every], correction)):
        direction = METRIC_INFO.get(r["metric"], ("", "higher", ""))[1]
        r["p_value_corrected"] = p
        r["winner"] = winner(r["a"], r["b"], r["mean_difference"], p, direction, ALPHA)
        r["better"] = None if r["winner"] == NO_WINNER else r["winner"]
    n_tests = sum(r["p_value"] is not None for r in every)
    out: dict[str, Any] = {
        "images": len(images), "unit": unit, "failed": [{"image": i, "path": p, "error": e} for i, p, e in failed],
        "methods": list(methods), "metrics": list(metrics),
        "directions": {k: METRIC_INFO.get(k, ("", "higher", ""))[1] for k in metrics},
        "labels": {k: METRIC_INFO.get(k, (k, "", ""))[0] for k in metrics},
        "kinds": {m: kinds.get(m) for m in methods},
        "table": cells, "paired": paired, "refused": refused,
        "correction": {"method": correction, "tests": n_tests, "alpha": ALPHA,
                       "note": correction_note(correction, n_tests)},
        "bootstrap": {"method": "percentile", "statistic": "mean", "resamples": n_resamples,
                      "confidence": confidence, "seed": seed},
        "test": f"Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided) on the {unit.replace('(s)', 's')} where "
                "both methods have a value, effect size the matched-pairs rank-biserial correlation; a winner is named "
                f"only when the {correction}-corrected p-value is below {ALPHA}, following each metric's direction",
    }
    if cluster is not None:
        plural = unit.replace("(s)", "s")
        out["clusters"] = {"column": cluster, "n": len(set(cluster_of.values())), "unit": "image(s)"}
        out["bootstrap"].update(method="cluster percentile", resampled="image(s)")
        out["test"] = (f"Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided) on one value per image: the mean of "
                       f"A - B on the {plural} where both methods have a value, within the image (the {plural} of "
                       "one image are not independent, the images are), so n counts images and the mean and median "
                       "A - B are over those per-image means; effect size the matched-pairs rank-biserial "
                       f"correlation; a winner is named only when the {correction}-corrected p-value is below "
                       f"{ALPHA}, following each metric's direction")
    out["headline"] = comparison_headline(out)
    out["flags"] = summary_flags(out) + confidence_flags(table, methods, metrics, out["labels"])
    if "win" in metrics:
        out["win_percentage"] = {m: cells[m]["win"]["mean"] for m in methods}
    return out


def cluster_means(a: Mapping[int, float], b: Mapping[int, float], rows: Sequence[int],
                  cluster_of: Mapping[int, int]) -> tuple[list[float], list[float]]:
    """Per cluster (in sorted order) the mean of ``a`` and of ``b`` over its ``rows``: the pairs of a clustered test."""
    groups: dict[int, list[int]] = {}
    for i in rows:
        groups.setdefault(cluster_of[i], []).append(i)
    keys = sorted(groups)
    return ([float(np.mean([a[i] for i in groups[c]])) for c in keys],
            [float(np.mean([b[i] for i in groups[c]])) for c in keys])


def confidence_flags(table: Mapping[str, list], methods: Sequence[str], metrics: Sequence[str],
                     labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """Flags for curve metrics (Deletion, Insertion) whose per-image values follow the model's top-1
    probability, on the images whose explained class is the predicted one (table columns ``pred``,
    ``pred_prob``, ``target``)."""
    from interpretorch.core import flags as red
    from interpretorch.core.stats import spearman

    if "pred_prob" not in table:
        return []
    out = []
    for k in (k for k in metrics if k in ("deletion", "insertion")):
        for m in methods:
            pairs = [(v, p) for mm, v, p, t, pr, e in zip(table["method"], table[k], table["pred_prob"],
                                                           table.get("target", [None] * len(table[k])),
                                                           table.get("pred", [None] * len(table[k])), table["error"])
                     if mm == m and e is None and v is not None and p is not None and (t is None or t == pr)]
            if len(pairs) < 3:
                continue
            s = spearman([v for v, _ in pairs], [p for _, p in pairs])
            out.append(red.follows_confidence(f"{labels.get(k, k)} of {m}", s["rho"], s["p_value"], s["n"]))
    return [f for f in out if f]


def summary_flags(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Red flags of a dataset summary: ROAD orders no better than their reverse (means over the images), and
    metrics undefined on some images (the n each mean rests on)."""
    from interpretorch.core import flags as red

    out = []
    n = summary["images"]
    for m in summary["methods"]:
        cells = summary["table"][m]
        morf, lerf = cells.get("road_morf"), cells.get("road_lerf")
        if morf and lerf:
            out.append(red.road_order(m, morf["mean"], lerf["mean"]))
        for k, c in cells.items():
            if 0 < c["n"] < n:
                label = summary["labels"].get(k, k)
                out.append(red.flag("undefined_values", f"Undefined values: {label} of {m} is defined on {c['n']} of "
                                                        f"{n} {summary.get('unit', 'image(s)')}; its mean rests on "
                                                        "those.",
                                    method=m, metric=k, n=c["n"], of=n))
    return [f for f in out if f]


def comparison_headline(summary: Mapping[str, Any]) -> str:
    """One or two sentences answering "which method is better, and on what?" from the corrected comparisons."""
    every = [r for rows in summary["paired"].values() for r in rows]
    wins = sorted((r for r in every if r.get("winner") not in (None, NO_WINNER)), key=lambda r: r["p_value_corrected"])
    n = f"{summary['images']} {summary.get('unit', 'image(s)')}"
    if summary.get("clusters"):
        n += f" in {summary['clusters']['n']} image(s)"
    name = summary.get("correction", {}).get("method", "holm")
    after = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg"}.get(name)
    if not every:
        return f"{n}: no comparison between methods was made."
    if not wins:
        return (f"On {n}, no method beats another: none of the {len(every)} paired comparisons is "
                f"significant{' after ' + after if after else ''}.")
    shown = []
    for r in wins[:3]:
        loser = r["b"] if r["winner"] == r["a"] else r["a"]
        p = r["p_value_corrected"]
        shown.append(f"{r['winner']} beats {loser} on {summary['labels'].get(r['metric'], r['metric'])} "
                     f"({'p < 0.001' if p < 0.001 else f'p = {p:.2g}'}{', ' + after if after else ''})")
    rest = len(every) - len(wins)
    more = f"; {len(wins) - 3} more winners in the table" if len(wins) > 3 else ""
    return (f"On {n}: " + "; ".join(shown) + more +
            (f". {rest} of {len(every)} comparisons name no winner." if rest else "."))


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    """The summary table as plain-text lines (method, then mean [CI] per metric)."""
    metrics = summary["metrics"]
    head = ["method"] + [summary["labels"].get(k, k) for k in metrics]
    lines = ["\t".join(head)]
    for m in summary["methods"]:
        cells = [m]
        for k in metrics:
            c = summary["table"][m][k]
            cells.append("-" if c["mean"] is None else f"{c['mean']:.4g} [{c['ci_low']:.4g}, {c['ci_high']:.4g}]")
        lines.append("\t".join(cells))
    return lines
