"""Saliency evaluation metrics in Quantus's six families: faithfulness (Average Drop, Deletion / Insertion, ROAD,
faithfulness correlation / estimate, monotonicity, pixel flipping, region perturbation, selectivity, IROF, ...),
localisation (pointing games, ...), robustness (Infidelity, Max-Sensitivity, ...), complexity (sparseness,
entropy, effective complexity), ``register_metric`` to add one, and ``evaluate``. Importing the package registers
the built-in metrics."""
from interpretorch.metrics.complexity import complexity, effective_complexity, sparseness
from interpretorch.metrics.evaluate import (ALL_METRICS, DEFAULT_METRICS, METRIC_INFO, OPTION_GROUPS, evaluate,
                                            win_within)
from interpretorch.metrics.faithfulness import (Confidence, Curve, LinearImputer, RoadResult, average_drop,
                                                confidence, deletion, increase_in_confidence, insertion,
                                                noisy_linear_imputation, road, win_percentage)
from interpretorch.metrics.localisation import (boxes_to_masks, energy_pointing_game, pointing_chance,
                                                pointing_game)
from interpretorch.metrics.perturbation import (faithfulness_correlation, faithfulness_estimate, irof, monotonicity,
                                                monotonicity_correlation, pixel_flipping, region_perturbation,
                                                selectivity, sensitivity_n)
from interpretorch.metrics.randomisation import efficient_mprt, random_logit, smooth_mprt
from interpretorch.metrics.registry import (CATEGORIES, Figure, Metric, MetricContext, available_metrics,
                                            default_metrics, family, figures, get_metric, register_metric,
                                            unregister_metric)
from interpretorch.metrics.axiomatic import completeness, input_invariance, non_sensitivity
from interpretorch.metrics.consistency import consistency, sufficiency
from interpretorch.metrics.focus import Mosaics, focus, make_mosaics
from interpretorch.metrics.localisation import (attribution_localisation, localisation_auc, relevance_mass_accuracy,
                                                relevance_rank_accuracy, top_k_intersection)
from interpretorch.metrics.robustness import (average_sensitivity, continuity, infidelity, local_lipschitz_estimate,
                                              max_sensitivity, relative_input_stability, relative_output_stability,
                                              relative_representation_stability)

__all__ = ["evaluate", "METRIC_INFO", "DEFAULT_METRICS", "ALL_METRICS", "OPTION_GROUPS", "win_within",
           "register_metric", "unregister_metric", "get_metric", "available_metrics", "default_metrics", "figures",
           "Figure", "Metric", "MetricContext", "CATEGORIES",
           "Confidence", "Curve", "RoadResult", "LinearImputer", "confidence", "average_drop",
           "increase_in_confidence", "win_percentage", "deletion", "insertion", "road", "noisy_linear_imputation",
           "pointing_game", "energy_pointing_game", "pointing_chance", "boxes_to_masks",
           "infidelity", "max_sensitivity", "family",
           "sparseness", "complexity", "effective_complexity",
           "faithfulness_correlation", "faithfulness_estimate", "monotonicity", "monotonicity_correlation",
           "pixel_flipping", "region_perturbation", "selectivity", "sensitivity_n", "irof",
           "attribution_localisation", "top_k_intersection", "relevance_rank_accuracy", "relevance_mass_accuracy",
           "localisation_auc", "completeness", "non_sensitivity", "average_sensitivity", "local_lipschitz_estimate",
           "random_logit", "sufficiency", "consistency", "continuity", "relative_input_stability",
           "relative_output_stability", "relative_representation_stability", "focus", "make_mosaics", "Mosaics",
           "input_invariance", "smooth_mprt", "efficient_mprt"]
