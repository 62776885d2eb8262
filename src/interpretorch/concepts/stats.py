"""Significance of TCAV scores: concept runs against random-versus-random runs (two-sided t-test), through the
library's one statistics layer (:mod:`interpretorch.core.stats`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from interpretorch.core.stats import adjust_p, detectable_difference, direction_label, mean_ci, two_sample_t


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


LOW_POWER_DIFFERENCE = 0.25
LOW_POWER_RULE = ("low power: the smallest difference from the random baseline that the t-test (two-sided, at the "
                  "chosen level, R runs per side) detects with 80% power, (z_(1-level/2) + z_0.8) * sd * sqrt(2/R) "
                  "with sd the random runs' sample sd, exceeds 0.25 (half the way from the 0.5 baseline to 0 or 1): "
                  "a concept can then look not significant only because the random runs swing too much")


def concept_tests(concept_runs: Sequence[tuple[str, str, Sequence[float]]], random_runs: Mapping[str, Sequence[float]],
                  significance: float = 0.05, correction: str = "holm") -> list[dict[str, Any]]:
    """Every (layer, concept, run scores) tested against its layer's random-versus-random runs, the p-values
    corrected over all the tests given (Holm by default), each labelled by direction ("significantly above
    random", "significantly below random", "not significant") and flagged low-power by ``LOW_POWER_RULE``."""
    rows = []
    for layer, concept, runs in concept_runs:
        if layer not in random_runs:
            raise KeyError(f"no random runs for layer {layer!r}")
        rand = list(random_runs[layer])
        ci = mean_ci(runs)
        rci = mean_ci(rand)
        mdd = detectable_difference(rci["sd"] or 0.0, len(rand), significance)
        rows.append({"layer": layer, "concept": concept, "runs": ci["n"], "score": ci["mean"],
                     "score_ci_low": ci["ci_low"], "score_ci_high": ci["ci_high"], "random_score": rci["mean"],
                     "p_value_uncorrected": ttest_pvalue(runs, rand), "detectable_difference": mdd,
                     "low_power": bool(mdd > LOW_POWER_DIFFERENCE)})
    corrected = adjust_p([r["p_value_uncorrected"] for r in rows], correction)
    for r, p in zip(rows, corrected):
        r["p_value"] = float(p)
        r["significant"] = bool(p < significance)
        r["direction"] = direction_label(r["score"] - r["random_score"], p, significance)
    return rows
