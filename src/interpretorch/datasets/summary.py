"""A summary like the papers': per method and metric the mean with a 95% bootstrap confidence interval, paired
Wilcoxon signed-rank tests between methods on the same images, and the Grad-CAM++ win percentage.

The interval is the percentile bootstrap of the mean; resamples are drawn in batches from
``numpy.random.default_rng(seed)`` exactly as ``scipy.stats.bootstrap(..., method="percentile")`` draws them, so
the two agree on the same seed, resamples and batch. The tests are ``scipy.stats.wilcoxon`` (two-sided) on the
images where both methods have a value.
"""
from __future__ import annotations

import math
import warnings
from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from interpretorch.metrics.evaluate import METRIC_INFO

BOOTSTRAP_RESAMPLES = 10_000
_MAX_DRAWS = 4_000_000  # resampled values held at once: bounded memory for any number of images


def bootstrap_batch(n: int, n_resamples: int = BOOTSTRAP_RESAMPLES) -> int:
    """Resamples drawn at once for ``n`` values (at most about four million indices in memory)."""
    return max(1, min(n_resamples, _MAX_DRAWS // max(n, 1)))


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0, batch: int | None = None) -> tuple[float, float]:
    """The percentile bootstrap confidence interval of the mean of ``values``: (low, high)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D sequence of values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("bootstrap_ci values must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    n = x.size
    rng = np.random.default_rng(seed)
    step = batch or bootstrap_batch(n, n_resamples)
    means = []
    for k in range(0, n_resamples, step):
        idx = rng.integers(0, n, (min(step, n_resamples - k), n))
        means.append(x[idx].mean(axis=-1))
    theta = np.concatenate(means)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(theta, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired values ``a`` vs ``b`` (two-sided): n, statistic, p-value, differences."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values must be two 1-D sequences of one length, got {x.shape} and {y.shape}")
    d = x - y
    out: dict[str, Any] = {"n": int(d.size), "mean_difference": float(d.mean()) if d.size else None,
                           "median_difference": float(np.median(d)) if d.size else None,
                           "statistic": None, "p_value": None}
    if d.size == 0:
        return out
    if not np.any(d != 0):
        out.update(statistic=0.0, p_value=1.0, note="identical values on every image")
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when it falls back to the normal approximation
        res = wilcoxon(x, y)
    out.update(statistic=float(res.statistic), p_value=float(res.pvalue))
    return out


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
              n_resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = 0.95) -> dict[str, Any]:
    """The summary of per-image rows: {"table", "paired", "win_percentage", "images", "failed", ...}, JSON-ready."""
    images = sorted(set(table.get("image", [])))
    failed = sorted({(int(i), p, e) for i, p, e in zip(table.get("image", []), table.get("path", []),
                                                       table.get("error", [])) if e is not None})
    cells: dict[str, dict[str, Any]] = {}
    values = {(m, k): metric_values(table, m, k) for m in methods for k in metrics}
    for m in methods:
        cells[m] = {}
        for k in metrics:
            v = np.asarray(list(values[m, k].values()), dtype=np.float64)
            if v.size == 0:
                cells[m][k] = {"n": 0, "mean": None, "ci_low": None, "ci_high": None, "std": None}
                continue
            low, high = bootstrap_ci(v, confidence=confidence, n_resamples=n_resamples, seed=seed)
            cells[m][k] = {"n": int(v.size), "mean": float(v.mean()), "ci_low": low, "ci_high": high,
                           "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
    paired: dict[str, list[dict[str, Any]]] = {}
    for k in metrics:
        better = METRIC_INFO.get(k, ("", "higher", ""))[1]
        rows = []
        for a, b in combinations(methods, 2):
            common = sorted(set(values[a, k]) & set(values[b, k]))
            res = paired_test([values[a, k][i] for i in common], [values[b, k][i] for i in common])
            d = res["mean_difference"]
            res.update(a=a, b=b, better=None if not d else (a if (d < 0) == (better == "lower") else b))
            rows.append(res)
        if rows:
            paired[k] = rows
    out: dict[str, Any] = {
        "images": len(images), "failed": [{"image": i, "path": p, "error": e} for i, p, e in failed],
        "methods": list(methods), "metrics": list(metrics),
        "directions": {k: METRIC_INFO.get(k, ("", "higher", ""))[1] for k in metrics},
        "labels": {k: METRIC_INFO.get(k, (k, "", ""))[0] for k in metrics},
        "table": cells, "paired": paired,
        "bootstrap": {"method": "percentile", "statistic": "mean", "resamples": n_resamples,
                      "confidence": confidence, "seed": seed},
        "test": "Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided) on the images where both methods "
                "have a value; 'better' follows each metric's direction",
    }
    if "win" in metrics:
        out["win_percentage"] = {m: cells[m]["win"]["mean"] for m in methods}
    return out


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
