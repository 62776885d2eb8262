"""The built-in metrics, registered with :func:`~interpretorch.metrics.registry.register_metric` when
``interpretorch.metrics`` is imported; their order is the order of every table."""
from __future__ import annotations

from typing import Any, Mapping

import torch

from interpretorch.explanation import Explanation
from interpretorch.metrics._common import maps_2d
from interpretorch.metrics.axiomatic import completeness, input_invariance, non_sensitivity
from interpretorch.metrics.consistency import consistency, sufficiency
from interpretorch.metrics.complexity import complexity, effective_complexity, sparseness
from interpretorch.metrics.focus import focus
from interpretorch.metrics.faithfulness import Confidence, confidence, deletion, insertion, road, win_percentage
from interpretorch.metrics.localisation import (attribution_localisation, energy_pointing_game, localisation_auc,
                                                pointing_game, relevance_mass_accuracy, relevance_rank_accuracy,
                                                top_k_intersection)
from interpretorch.metrics.perturbation import (curve_auc, faithfulness_correlation, faithfulness_estimate, irof,
                                                monotonicity, monotonicity_correlation, pixel_flipping,
                                                region_perturbation, selectivity, sensitivity_n)
from interpretorch.metrics.randomisation import efficient_mprt, random_logit, smooth_mprt
from interpretorch.metrics.registry import Figure, MetricContext, entry, register_metric
from interpretorch.metrics.robustness import (average_sensitivity, continuity, infidelity, local_lipschitz_estimate,
                                              max_sensitivity, relative_input_stability, relative_output_stability,
                                              relative_representation_stability, relative_stability)

__all__ = ["confidence_of", "CURVE_PROTOCOL"]

# Average Drop, Increase in Confidence and Win multiply the image by the min-max normalised map: a sparse pixel
# attribution keeps few pixels and its drop is large by construction, so they suit region maps only.
REGION = ("region",)
IMAGE_MAPS = ("region", "pixel")
CONFIDENCE_PROTOCOL = ("baseline", "softmax")
CURVE_PROTOCOL = ("substrate", "step", "softmax", "blur_sigma", "blur_kernel")


def confidence_of(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> Confidence:
    """The confidence pass of ``method``'s maps, computed once per ``evaluate`` call for the figures sharing it
    (Average Drop, Increase in Confidence, Win); the drops are kept in ``ctx.shared["drops"]``."""
    cache = ctx.shared.setdefault("confidence", {})
    if method not in cache:
        cache[method] = confidence(ctx.model, ctx.inputs, exp, ctx.target, rule=ctx.rule, **ctx.common, **options)
        ctx.shared.setdefault("drops", {})[method] = cache[method].drop
    return cache[method]


def _average_drop(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return confidence_of(ctx, method, exp, **options).drop * 100


def _increase(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return confidence_of(ctx, method, exp, **options).increase * 100


def _win_drops(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> dict[str, Any]:
    confidence_of(ctx, method, exp, **options)
    return {}


def _win(ctx: MetricContext, results: Mapping[str, Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    return win_percentage(ctx.shared.get("drops", {}))


def _curve_settings(values: dict[str, Any]) -> dict[str, Any]:
    if values.get("substrate") != "blur":
        values.pop("blur_sigma", None)
        values.pop("blur_kernel", None)
    return values


def _deletion(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> dict[str, Any]:
    return {"deletion": deletion(ctx.model, ctx.inputs, exp, ctx.target, rule=ctx.rule, **ctx.common,
                                 **options).to_dict()}


def _insertion(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> dict[str, Any]:
    return {"insertion": insertion(ctx.model, ctx.inputs, exp, ctx.target, rule=ctx.rule, **ctx.common,
                                   **options).to_dict()}


def _road(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> dict[str, Any]:
    r = road(ctx.model, ctx.inputs, exp, ctx.target, rule=ctx.rule, **ctx.common, **options)
    return {f"road_{o}": r.to_dict(o) for o in ("morf", "lerf") if getattr(r, f"{o}_scores") is not None}


def _pointing(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return pointing_game(exp, boxes=ctx.boxes, masks=ctx.masks, rule=ctx.rule, **options)


def _energy(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return energy_pointing_game(exp, boxes=ctx.boxes, masks=ctx.masks, rule=ctx.rule, **options)


def _infidelity(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return infidelity(ctx.model, ctx.inputs, exp, ctx.target, **ctx.common, **options)


def _max_sensitivity(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return max_sensitivity(ctx.model, ctx.inputs, exp, ctx.target, explain_fn=ctx.explainer(method), **ctx.common,
                           **options)


register_metric("average_drop", _average_drop, category="faithfulness", direction="lower", unit="%",
                kinds=REGION, label="Average Drop", options="confidence", protocol=CONFIDENCE_PROTOCOL,
                defaults_from=confidence, aliases=("confidence",))
register_metric("increase_in_confidence", _increase, category="faithfulness", direction="higher", unit="%",
                kinds=REGION, label="Increase in Confidence", options="confidence", protocol=CONFIDENCE_PROTOCOL,
                defaults_from=confidence)
register_metric("win", _win_drops, category="faithfulness", direction="higher", unit="%", kinds=REGION,
                label="Win", options="confidence", protocol=CONFIDENCE_PROTOCOL, defaults_from=confidence,
                across=_win)
register_metric("deletion", _deletion, category="faithfulness", direction="lower", kinds=IMAGE_MAPS,
                label="Deletion AUC", protocol=CURVE_PROTOCOL, defaults_from=deletion, tidy=_curve_settings)
register_metric("insertion", _insertion, category="faithfulness", direction="higher", kinds=IMAGE_MAPS,
                label="Insertion AUC", protocol=CURVE_PROTOCOL, defaults_from=insertion, tidy=_curve_settings)
register_metric("road", _road, gives=(Figure("road_morf", "ROAD MoRF", "faithfulness", "lower", "", IMAGE_MAPS),
                                      Figure("road_lerf", "ROAD LeRF", "faithfulness", "higher", "", IMAGE_MAPS)),
                protocol=("percentages", "noise", "softmax", "seed"), defaults_from=road)
register_metric("pointing_game", _pointing, category="localisation", direction="higher", kinds=IMAGE_MAPS,
                label="Pointing game", needs=("objects",), defaults_from=pointing_game)
register_metric("energy_pointing_game", _energy, category="localisation", direction="higher", kinds=IMAGE_MAPS,
                label="Energy pointing game", needs=("objects",), defaults_from=energy_pointing_game)
register_metric("infidelity", _infidelity, category="robustness", direction="lower", kinds=IMAGE_MAPS,
                label="Infidelity", protocol=("perturbation", "n_perturb", "sigma", "seed"), defaults_from=infidelity)
# max_sensitivity re-explains every noisy copy, so it is asked for by name.
register_metric("max_sensitivity", _max_sensitivity, category="robustness", direction="lower", kinds=IMAGE_MAPS,
                label="Max-Sensitivity", default=False, needs=("explain_fn",), defaults_from=max_sensitivity)


# ------------------------------------------------------------------ Quantus's families (asked for by name or family)
# These are not part of the default set: `evaluate(metrics="complexity")` (or `--metrics complexity`) runs a family;
# a family's name selects it, so Quantus's Complexity (entropy) is registered as "entropy".


def _complexity_fn(fn: Any) -> Any:
    def run(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
        return fn(maps_2d(exp, ctx.inputs, ctx.rule), **options)
    return run


register_metric("sparseness", _complexity_fn(sparseness), category="complexity", direction="higher",
                kinds=IMAGE_MAPS, label="Sparseness (Gini)", default=False, defaults_from=sparseness)
register_metric("entropy", _complexity_fn(complexity), category="complexity", direction="lower",
                kinds=IMAGE_MAPS, label="Complexity (entropy)", default=False, defaults_from=complexity)
register_metric("effective_complexity", _complexity_fn(effective_complexity), category="complexity",
                direction="lower", kinds=IMAGE_MAPS, label="Effective complexity", default=False,
                protocol=("eps",), defaults_from=effective_complexity)


def _model_fn(fn: Any, summary: Any = None) -> Any:
    def run(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
        out = fn(ctx.model, ctx.inputs, exp, ctx.target, rule=ctx.rule, **ctx.common, **options)
        return out if summary is None else summary(out)
    return run


def _normalised_auc(curve: torch.Tensor) -> torch.Tensor:
    """The area under a (B, S) curve drawn over [0, 1] (Quantus's dx = 1 area divided by S - 1)."""
    return curve_auc(curve, 1.0 / max(curve.shape[1] - 1, 1))


STEP_PROTOCOL = ("features_in_step", "baseline", "softmax")
PATCH_PROTOCOL = ("patch_size", "baseline", "softmax")
register_metric("faithfulness_correlation", _model_fn(faithfulness_correlation), category="faithfulness",
                direction="higher", kinds=IMAGE_MAPS, label="Faithfulness correlation", default=False,
                protocol=("nr_runs", "subset_size", "baseline", "softmax", "seed"),
                defaults_from=faithfulness_correlation)
register_metric("faithfulness_estimate", _model_fn(faithfulness_estimate), category="faithfulness",
                direction="higher", kinds=IMAGE_MAPS, label="Faithfulness estimate", default=False,
                protocol=STEP_PROTOCOL, defaults_from=faithfulness_estimate)
register_metric("monotonicity", _model_fn(monotonicity), category="faithfulness", direction="higher",
                kinds=IMAGE_MAPS, label="Monotonicity", default=False, protocol=STEP_PROTOCOL,
                defaults_from=monotonicity)
register_metric("monotonicity_correlation", _model_fn(monotonicity_correlation), category="faithfulness",
                direction="higher", kinds=IMAGE_MAPS, label="Monotonicity correlation", default=False,
                protocol=STEP_PROTOCOL + ("nr_samples", "seed"), defaults_from=monotonicity_correlation)
register_metric("pixel_flipping", _model_fn(pixel_flipping, _normalised_auc), category="faithfulness",
                direction="lower", kinds=IMAGE_MAPS, label="Pixel flipping AUC", default=False,
                protocol=STEP_PROTOCOL, defaults_from=pixel_flipping)
register_metric("region_perturbation", _model_fn(region_perturbation, lambda c: c.mean(1)),
                category="faithfulness", direction="higher", kinds=IMAGE_MAPS, label="Region perturbation AOPC",
                default=False, protocol=("patch_size", "order", "regions_evaluation", "baseline", "softmax"),
                defaults_from=region_perturbation)
register_metric("selectivity", _model_fn(selectivity, _normalised_auc), category="faithfulness",
                direction="lower", kinds=IMAGE_MAPS, label="Selectivity AUC", default=False,
                protocol=PATCH_PROTOCOL, defaults_from=selectivity)
register_metric("irof", _model_fn(irof), category="faithfulness", direction="higher", kinds=IMAGE_MAPS,
                label="IROF", default=False, protocol=("segmentation", "baseline", "softmax"), defaults_from=irof)


def _objects_fn(fn: Any) -> Any:
    def run(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
        return fn(exp, boxes=ctx.boxes, masks=ctx.masks, rule=ctx.rule, **options)
    return run


for _name, _fn, _label, _protocol in (
        ("attribution_localisation", attribution_localisation, "Attribution localisation", ("weighted",)),
        ("top_k_intersection", top_k_intersection, "Top-k intersection", ("k",)),
        ("relevance_rank_accuracy", relevance_rank_accuracy, "Relevance rank accuracy", ()),
        ("relevance_mass_accuracy", relevance_mass_accuracy, "Relevance mass accuracy", ()),
        ("localisation_auc", localisation_auc, "Localisation AUC", ())):
    register_metric(_name, _objects_fn(_fn), category="localisation", direction="higher", kinds=IMAGE_MAPS,
                    label=_label, default=False, needs=("objects",), protocol=_protocol, defaults_from=_fn)


def _completeness(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return completeness(ctx.model, ctx.inputs, exp, ctx.target, **ctx.common, **options)


# Completeness compares the attributions' sum with a change of score: it suits pixel attributions only.
register_metric("completeness", _completeness, category="axiomatic", direction="lower", kinds=("pixel",),
                label="Completeness gap", default=False, protocol=("baseline", "softmax"), defaults_from=completeness)
register_metric("non_sensitivity", _model_fn(non_sensitivity), category="axiomatic", direction="lower",
                kinds=IMAGE_MAPS, label="Non-sensitivity", default=False,
                protocol=("eps", "features_in_step", "baseline", "softmax"), defaults_from=non_sensitivity)


def _reexplaining(fn: Any) -> Any:
    def run(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
        return fn(ctx.model, ctx.inputs, exp, ctx.target, explain_fn=ctx.explainer(method), **ctx.common, **options)
    return run


register_metric("average_sensitivity", _reexplaining(average_sensitivity), category="robustness", direction="lower",
                kinds=IMAGE_MAPS, label="Avg-Sensitivity", default=False, needs=("explain_fn",),
                protocol=("radius", "n_samples", "seed"), defaults_from=average_sensitivity)
register_metric("local_lipschitz_estimate", _reexplaining(local_lipschitz_estimate), category="robustness",
                direction="lower", kinds=IMAGE_MAPS, label="Local Lipschitz estimate", default=False,
                needs=("explain_fn",), protocol=("sigma", "n_samples", "seed"), defaults_from=local_lipschitz_estimate)
register_metric("random_logit", _reexplaining(random_logit), category="randomisation", direction="lower",
                kinds=IMAGE_MAPS, label="Random logit (SSIM)", default=False, needs=("explain_fn",),
                protocol=("seed",), defaults_from=random_logit)


# ------------------------------------------------------------------ the rest of Quantus's families (issue 30)

def _predictions(ctx: MetricContext) -> torch.Tensor:
    out = ctx.clean
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ValueError("sufficiency and consistency compare predicted classes: the model must output (B, K) "
                         "class scores")
    return out.argmax(1)


def _sufficiency(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return sufficiency(exp, _predictions(ctx), **options)


def _consistency(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return consistency(exp, _predictions(ctx), **options)


def _sensitivity_n(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> dict[str, Any]:
    # One correlation per step, across the images (as Quantus 0.6): no per-image values, so the entry holds the
    # steps' curve and their mean as its value; the statistics of per-image figures do not apply to it.
    curve = sensitivity_n(ctx.model, ctx.inputs, exp, ctx.target, rule=ctx.rule, **ctx.common, **options)
    finite = curve[torch.isfinite(curve)]
    return {"sensitivity_n": {"value": float(finite.mean()) if finite.numel() else None,
                              "per_step": [None if not torch.isfinite(v) else float(v) for v in curve],
                              "n_images": int(ctx.inputs.shape[0])}}


def _smooth_mprt(ctx: MetricContext, method: str, exp: Explanation, **options: Any) -> torch.Tensor:
    return smooth_mprt(ctx.model, ctx.inputs, exp, ctx.target, explain_fn=ctx.explainer(method), **ctx.common,
                       **options).mean(1)


register_metric("sufficiency", _sufficiency, category="faithfulness", direction="higher", kinds=IMAGE_MAPS,
                label="Sufficiency", default=False, needs=("image_set",), protocol=("threshold",),
                defaults_from=sufficiency)
register_metric("sensitivity_n", _sensitivity_n, category="faithfulness", direction="higher", kinds=IMAGE_MAPS,
                label="Sensitivity-N (mean over steps)", default=False, needs=("image_set",),
                protocol=("features_in_step", "n_max_percentage", "baseline", "softmax"), defaults_from=sensitivity_n)
register_metric("consistency", _consistency, category="robustness", direction="higher", kinds=IMAGE_MAPS,
                label="Consistency", default=False, needs=("image_set",), protocol=("discretise", "n", "cells"),
                defaults_from=consistency)
register_metric("continuity", _reexplaining(continuity), category="robustness", direction="lower",
                kinds=IMAGE_MAPS, label="Continuity", default=False, needs=("explain_fn",), protocol=("nr_steps",),
                defaults_from=continuity)
for _name, _fn, _label in (("relative_input_stability", relative_input_stability, "RIS"),
                           ("relative_output_stability", relative_output_stability, "ROS"),
                           ("relative_representation_stability", relative_representation_stability, "RRS")):
    register_metric(_name, _reexplaining(_fn), category="robustness", direction="lower", kinds=IMAGE_MAPS,
                    label=_label, default=False, needs=("explain_fn",), protocol=("n_samples", "noise", "seed"),
                    defaults_from=relative_stability)
register_metric("focus", _objects_fn(focus), category="localisation", direction="higher", kinds=IMAGE_MAPS,
                label="Focus", default=False, needs=("objects",), defaults_from=focus)
register_metric("input_invariance", _reexplaining(input_invariance), category="axiomatic", direction="higher",
                kinds=IMAGE_MAPS, label="Input invariance", default=False, needs=("explain_fn",),
                protocol=("shift",), defaults_from=input_invariance)
register_metric("smooth_mprt", _smooth_mprt, category="randomisation", direction="lower", kinds=IMAGE_MAPS,
                label="Smooth MPRT (Spearman)", default=False, needs=("explain_fn",),
                protocol=("nr_samples", "noise_magnitude", "order", "seed"), defaults_from=smooth_mprt)
register_metric("efficient_mprt", _reexplaining(efficient_mprt), category="randomisation", direction="higher",
                kinds=IMAGE_MAPS, label="Efficient MPRT", default=False, needs=("explain_fn",),
                protocol=("n_bins", "seed"), defaults_from=efficient_mprt)
