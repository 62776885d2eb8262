"""The one statistics layer every result uses: n, 95 % confidence intervals, paired tests with effect sizes,
multiple-comparison correction, direction-aware significance, a winner only when the corrected test says so,
and a precision note when an interval is wider than the effect.

Which interval each figure uses:

- ``t_interval`` / ``mean_ci``: Student's t interval of a mean (``mean +- t_{n-1} * sd / sqrt(n)``), for
  figures that are means of roughly normal values (TCAV scores over runs, metric means over a few images);
- ``bootstrap_ci``: the percentile bootstrap of the mean with a fixed seed, for figures whose per-image
  distribution is not normal (bounded, skewed metric values over a dataset). Resamples are drawn in batches
  from ``numpy.random.default_rng(seed)`` exactly as ``scipy.stats.bootstrap(..., method="percentile")``
  draws them, so the two agree on the same seed, resamples and batch;
- ``cluster_bootstrap_ci``: the same percentile bootstrap for values that come in clusters (the several
  detections of one image): whole clusters are resampled with replacement, all their values kept, so the
  interval reflects that values of one cluster are not independent. With one value per cluster it draws the
  same indices as ``bootstrap_ci`` and gives its interval.

The tests themselves are scipy's (``wilcoxon``, ``ttest_rel``, ``ttest_ind``); this module adds the effect
sizes (matched-pairs rank-biserial correlation for Wilcoxon, Cohen's d_z for the paired t-test), the
corrections (Holm by default; Bonferroni and Benjamini-Hochberg) and the wording.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
_MAX_DRAWS = 4_000_000  # resampled values held at once: bounded memory for any number of values
CORRECTIONS = ("holm", "bonferroni", "bh", "none")
NO_WINNER = "no winner"
CORRECTION_NAMES = {"holm": "Holm", "bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg", "none": "no correction"}


def _vector(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} needs a 1-D sequence of values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: values must be finite")
    return x


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def t_interval(mean: float, sd: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Student's t interval of a mean from its sample sd and n; None when n < 2 (no interval exists)."""
    _check_confidence(confidence)
    if n is None or n < 2 or mean is None or sd is None:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2.0, n - 1)) * float(sd) / math.sqrt(n)
    return float(mean) - half, float(mean) + half


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """n, mean, sample sd (ddof 1) and the t interval of the mean of ``values`` (interval None when n < 2)."""
    x = _vector(values, "mean_ci")
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None, "interval": "t"}
    sd = float(x.std(ddof=1)) if n > 1 else None
    ci = t_interval(float(x.mean()), sd, n, confidence) if n > 1 else None
    return {"n": n, "mean": float(x.mean()), "sd": sd, "ci_low": ci[0] if ci else None,
            "ci_high": ci[1] if ci else None, "interval": "t"}


def bootstrap_batch(n: int, n_resamples: int = BOOTSTRAP_RESAMPLES) -> int:
    """Resamples drawn at once for ``n`` values (at most about four million indices in memory)."""
    return max(1, min(n_resamples, _MAX_DRAWS // max(n, 1)))


def bootstrap_ci(values: Sequence[float], *, confidence: float = 0.95, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = 0, batch: int | None = None) -> tuple[float, float]:
    """The percentile bootstrap confidence interval of the mean of ``values``: (low, high)."""
    x = _vector(values, "bootstrap_ci")
    if x.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sequence of values, got shape (0,)")
    _check_confidence(confidence)
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


def cluster_bootstrap_ci(values: Sequence[float], clusters: Sequence[Any], *, confidence: float = 0.95,
                         n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                         batch: int | None = None) -> tuple[float, float]:
    """The percentile cluster-bootstrap confidence interval of the mean of ``values`` grouped by ``clusters``."""
    # Each resample draws m of the m clusters (sorted ids) with replacement and takes the mean of all values of
    # the drawn clusters (sum of their values / their count): the statistic is the plain mean of the values,
    # its spread that of the cluster totals, as in Davison & Hinkley (1997) sec. 3.8 (resampling stage 1 only).
    x = _vector(values, "cluster_bootstrap_ci")
    if x.size == 0:
        raise ValueError("cluster_bootstrap_ci needs a non-empty 1-D sequence of values, got shape (0,)")
    if len(clusters) != x.size:
        raise ValueError(f"cluster_bootstrap_ci needs one cluster per value, got {len(clusters)} clusters for "
                         f"{x.size} values")
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    _, inverse = np.unique(np.asarray(clusters), return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.bincount(inverse, weights=x)
    counts = np.bincount(inverse).astype(np.float64)
    m = sums.size
    rng = np.random.default_rng(seed)
    step = batch or bootstrap_batch(m, n_resamples)
    means = []
    for k in range(0, n_resamples, step):
        idx = rng.integers(0, m, (min(step, n_resamples - k), m))
        means.append(sums[idx].sum(axis=-1) / counts[idx].sum(axis=-1))
    theta = np.concatenate(means)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(theta, [alpha, 1.0 - alpha])
    return float(low), float(high)


def rank_biserial(differences: Sequence[float]) -> float | None:
    """Matched-pairs rank-biserial correlation of paired differences (zeros dropped, as Wilcoxon's default):
    (sum of ranks of positive differences - sum of ranks of negative ones) / total rank sum, in [-1, 1]."""
    from scipy.stats import rankdata

    d = _vector(differences, "rank_biserial")
    d = d[d != 0]
    if d.size == 0:
        return None
    r = rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def cohens_dz(differences: Sequence[float]) -> float | None:
    """Cohen's d_z of paired differences: mean / sample sd (ddof 1); None when n < 2 or the sd is 0."""
    d = _vector(differences, "cohens_dz")
    if d.size < 2:
        return None
    sd = float(d.std(ddof=1))
    return None if sd == 0 else float(d.mean()) / sd


def paired_test(a: Sequence[float], b: Sequence[float], test: str = "wilcoxon",
                confidence: float = 0.95) -> dict[str, Any]:
    """Two-sided paired test of ``a`` vs ``b`` (``"wilcoxon"`` signed-rank or ``"t"``): n, statistic, p-value,
    mean / median difference a - b with its t interval, and the effect size (rank-biserial or d_z)."""
    from scipy.stats import ttest_rel, wilcoxon

    if test not in ("wilcoxon", "t"):
        raise ValueError(f"unknown paired test {test!r}; choose 'wilcoxon' or 't'")
    x, y = _vector(a, "paired_test"), _vector(b, "paired_test")
    if x.shape != y.shape:
        raise ValueError(f"paired values must be two 1-D sequences of one length, got {x.shape} and {y.shape}")
    d = x - y
    ci = mean_ci(d, confidence)
    out: dict[str, Any] = {"test": test, "n": int(d.size),
                           "mean_difference": float(d.mean()) if d.size else None,
                           "median_difference": float(np.median(d)) if d.size else None,
                           "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
                           "statistic": None, "p_value": None,
                           "effect_size": None,
                           "effect_size_name": "rank-biserial" if test == "wilcoxon" else "Cohen's d_z"}
    if d.size == 0:
        return out
    out["effect_size"] = rank_biserial(d) if test == "wilcoxon" else cohens_dz(d)
    if not np.any(d != 0):
        out.update(statistic=0.0, p_value=1.0, note="identical values on every pair")
        return out
    if d.size < 2:
        out["note"] = "one pair: no test"
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when it falls back to the normal approximation
        res = wilcoxon(x, y) if test == "wilcoxon" else ttest_rel(x, y)
    p = float(res.pvalue)
    out.update(statistic=float(res.statistic), p_value=1.0 if math.isnan(p) else p)
    return out


def two_sample_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Student's t-test (equal variances) between two samples; constant samples get a
    definite answer instead of NaN (equal -> 1, different -> 0)."""
    from scipy.stats import ttest_ind

    x, y = _vector(a, "two_sample_t"), _vector(b, "two_sample_t")
    if x.size < 2 or y.size < 2:
        raise ValueError(f"a t-test needs at least 2 values on each side, got {x.size} and {y.size}")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return 1.0 if x[0] == y[0] else 0.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(x, y, equal_var=True).pvalue)
    return 1.0 if math.isnan(p) else p


def adjust_p(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """p-values corrected for multiple comparisons over the family given (None entries are not tests and stay
    None): ``"holm"`` (step-down, default), ``"bonferroni"``, ``"bh"`` (Benjamini-Hochberg) or ``"none"``."""
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction {method!r}; choose one of {', '.join(CORRECTIONS)}")
    idx = [i for i, p in enumerate(p_values) if p is not None]
    p = np.asarray([float(p_values[i]) for i in idx], dtype=np.float64)
    if p.size and (not np.isfinite(p).all() or (p < 0).any() or (p > 1).any()):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    if method == "none" or m == 0:
        adj = p
    elif method == "bonferroni":
        adj = np.minimum(1.0, p * m)
    elif method == "holm":
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, stepped)
    else:  # bh
        order = np.argsort(p, kind="stable")
        scaled = p[order] * m / np.arange(1, m + 1)
        stepped = np.minimum.accumulate(scaled[::-1])[::-1]
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, stepped)
    out: list[float | None] = [None] * len(p_values)
    for i, v in zip(idx, adj):
        out[i] = float(v)
    return out


def correction_note(method: str, n_tests: int) -> str:
    """One sentence saying how the p-values shown were corrected."""
    names = CORRECTION_NAMES
    if method == "none":
        return f"p-values are not corrected for the {n_tests} tests shown."
    return f"p-values are {names[method]}-corrected over the {n_tests} test{'s' if n_tests != 1 else ''} shown."


def direction_label(difference: float | None, p_value: float | None, alpha: float = 0.05,
                    reference: str = "random") -> str:
    """``"significantly above <reference>"``, ``"significantly below <reference>"`` or ``"not significant"``
    from a (corrected) p-value and the sign of the difference from the reference."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if p_value is None or difference is None or p_value >= alpha or difference == 0:
        return "not significant"
    return f"significantly {'above' if difference > 0 else 'below'} {reference}"


def winner(a: str, b: str, mean_difference: float | None, p_value: float | None, direction: str = "higher",
           alpha: float = 0.05) -> str:
    """The better of ``a`` and ``b`` (``mean_difference`` = a - b, ``direction`` which way is better) when the
    (corrected) ``p_value`` is below ``alpha``; ``"no winner"`` otherwise."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if p_value is None or mean_difference is None or p_value >= alpha or mean_difference == 0:
        return NO_WINNER
    return a if (mean_difference > 0) == (direction == "higher") else b


def precision_note(effect: float | None, ci_low: float | None, ci_high: float | None) -> str | None:
    """A note when the confidence interval is wider than the effect it brackets (the estimate is imprecise)."""
    if effect is None or ci_low is None or ci_high is None:
        return None
    width = ci_high - ci_low
    if width > abs(effect):
        return (f"imprecise: the 95% interval [{ci_low:.3g}, {ci_high:.3g}] is wider ({width:.3g}) than the "
                f"effect ({effect:.3g}); more data would be needed to size it")
    return None


def detectable_difference(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest difference of means a two-sided two-sample test with ``n`` values per side and common sd
    ``sd`` detects with probability ``power`` (normal approximation: (z_{1-alpha/2} + z_power) sd sqrt(2/n))."""
    from scipy.stats import norm

    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * sd * math.sqrt(2.0 / n))


def cis_overlap(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Whether two intervals overlap (True when either is missing: nothing tells them apart)."""
    if a is None or b is None:
        return True
    return not (a[1] < b[0] or b[1] < a[0])


def separated_best(cells: dict[str, tuple[float | None, float | None, int | None]], direction: str = "higher",
                   confidence: float = 0.95) -> str | None:
    """The name whose mean is best in ``direction`` among ``cells`` ({name: (mean, sample sd, n)}) when its t
    interval overlaps no other's; None when an interval overlaps, a cell has n < 2, or fewer than two cells."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    have = {k: v for k, v in cells.items() if v[0] is not None}
    if len(have) < 2:
        return None
    pick = (max if direction == "higher" else min)(have, key=lambda k: have[k][0])
    ci = {k: t_interval(m, sd, n or 0, confidence) for k, (m, sd, n) in have.items()}
    if any(c is None for c in ci.values()):
        return None
    return pick if all(not cis_overlap(ci[pick], ci[k]) for k in have if k != pick) else None


def spearman(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Spearman's rank correlation of two paired samples with its two-sided p-value (scipy's): {"n", "rho",
    "p_value"}; rho and p None with fewer than 3 pairs or a constant sample."""
    from scipy.stats import spearmanr

    x, y = _vector(a, "spearman"), _vector(b, "spearman")
    if x.shape != y.shape:
        raise ValueError(f"paired values must be two 1-D sequences of one length, got {x.shape} and {y.shape}")
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"n": int(x.size), "rho": None, "p_value": None}
    res = spearmanr(x, y)
    return {"n": int(x.size), "rho": float(res.statistic), "p_value": float(res.pvalue)}
