"""Significance of TCAV scores: concept runs against random-versus-random runs (two-sided t-test)."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np


def ttest_pvalue(concept_scores: Sequence[float], random_scores: Sequence[float]) -> float:
    """Two-sided p-value of Student's t-test (equal variances, as the original TCAV) between two score samples.

    Degenerate samples get a definite answer instead of NaN: both constant and equal -> 1, both constant and
    different -> 0.
    """
    from scipy import stats

    a = np.asarray(concept_scores, dtype=np.float64)
    b = np.asarray(random_scores, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"a t-test needs at least 2 scores on each side, got {a.size} and {b.size}; "
                         "use more random runs")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():  # nearly constant samples: scipy warns, the p-value is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=True).pvalue)
    return 1.0 if math.isnan(p) else p


def bonferroni(p_values: Sequence[float], n_tests: int | None = None) -> list[float]:
    """Bonferroni-corrected p-values: each multiplied by the number of tests, capped at 1."""
    n = len(p_values) if n_tests is None else int(n_tests)
    return [min(1.0, float(p) * n) for p in p_values]
