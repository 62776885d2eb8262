"""Significance of TCAV scores: concept runs against random-versus-random runs (two-sided t-test), through the
library's one statistics layer (:mod:`interpretorch.core.stats`)."""
from __future__ import annotations

from typing import Sequence

from interpretorch.core.stats import adjust_p, two_sample_t


def ttest_pvalue(concept_scores: Sequence[float], random_scores: Sequence[float]) -> float:
    """Two-sided p-value of Student's t-test (equal variances, as the original TCAV) between two score samples.

    Degenerate samples get a definite answer instead of NaN: both constant and equal -> 1, both constant and
    different -> 0.
    """
    try:
        return two_sample_t(concept_scores, random_scores)
    except ValueError as e:
        raise ValueError(f"{e}; use more random runs") from None


def bonferroni(p_values: Sequence[float], n_tests: int | None = None) -> list[float]:
    """Bonferroni-corrected p-values: each multiplied by the number of tests, capped at 1."""
    if n_tests is None:
        return [float(p) for p in adjust_p(list(p_values), "bonferroni")]
    return [min(1.0, float(p) * int(n_tests)) for p in p_values]
