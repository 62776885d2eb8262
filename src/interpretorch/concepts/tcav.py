"""Testing with Concept Activation Vectors (TCAV, Kim et al. 2018), with random-run significance testing.

For a class k, a layer l and a CAV v_C (pointing from the random set towards concept C), the conceptual
sensitivity of input x is the directional derivative S(x) = grad_{h_l} logit_k(x) . v_C. The TCAV score is the
fraction of the class's inputs with S(x) > 0; the magnitude variant is sum(max(S, 0)) / sum(|S|), the share of
the total sensitivity that is positive (both in [0, 1], 0.5 meaning "no preference").

Sign convention. The original code (tensorflow/tcav) differentiates the *loss*, the cross-entropy of class k,
and counts inputs with grad(loss) . v_C < 0; its CAV is minus the SGDClassifier coefficient, because
scikit-learn's binary coefficient points to the second class (the random set). Here the CAV points to the
concept and we differentiate the class *logit* and count grad . v_C > 0, as Captum does. The two agree in
sign whenever decreasing the loss means increasing logit k; they can differ because the cross-entropy's
gradient also holds the softmax-weighted gradients of the other logits (-grad logit_k + sum_j p_j grad logit_j),
so for a confident prediction (p_k near 1) they coincide and for an uncertain one the original also counts the
concept's effect on the competing classes.

Significance. Each concept is tested against R random sets (R CAVs, one TCAV score each), and the random sets
against each other (random set r versus random set r+1 mod R: R scores of concepts that mean nothing). The two
samples are compared with a two-sided t-test; the p-values are corrected over every concept test of the run
(all concepts at all layers; Holm by default, Bonferroni / Benjamini-Hochberg / none on request). A concept whose
corrected p-value is not below ``significance`` is marked not significant; a significant one is labelled by its
direction ("significantly above random" or "significantly below random": a score far below 0.5 is a concept
that lowers the class's score, not one that raises it). A layer whose random runs swing so much that the test
cannot detect a difference of 0.25 is flagged low-power (``concepts.stats.LOW_POWER_RULE``).

Cost. The gradients of the class inputs at every layer come from one forward and one backward pass per batch
(all layers captured together) and are reused for every concept and random run; every CAV of the experiment is
trained in one batched problem (``train_cavs``); the concept and random activations come from the disk cache.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from interpretorch.capture import capture
from interpretorch.concepts.cache import ActivationCache, Images, model_fingerprint
from interpretorch.concepts.cav import CAVs, feature_gradients, train_cavs
from interpretorch.concepts.stats import LOW_POWER_RULE, concept_tests
from interpretorch.core.stats import CORRECTION_NAMES, CORRECTIONS, correction_note
from interpretorch.core import flags as red
from interpretorch.core import check_inputs, chunks, model_device, rows_per_pass
from interpretorch.core.targets import Target, check_finite, check_target, split_target, target_indices, target_scores
from interpretorch.models.layers import get_layer


def class_gradients(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str], target: Target = "top1", *,
                    batch_size: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """d(target score)/d(activation) at every layer, from one forward and one backward per batch.

    Returns ({layer: (N, ...) gradients}, the class index per input or None for a callable target).
    """
    x = check_inputs(model, inputs)
    target = check_target(target, x.shape[0])
    layers = list(layers)
    bs = rows_per_pass(batch_size, model_device(model))
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    idx_all = []
    n = x.shape[0]
    with capture(model, layers, grad=True) as rec:
        for sl in chunks(n, bs):
            rec.activations.clear()
            rec.calls.clear()
            out = model(x[sl])
            check_finite(out)
            t = split_target(target, sl)
            idx = target_indices(out, t)
            scores = target_scores(out, t, idx)
            g = rec.gradients(scores, layers)
            for name in layers:
                grads[name].append(g[name].detach())
            if idx is not None:
                idx_all.append(idx)
    return {k: torch.cat(v) for k, v in grads.items()}, (torch.cat(idx_all) if idx_all else None)


def sensitivities(grads: torch.Tensor, vectors: torch.Tensor, features: str = "flatten") -> torch.Tensor:
    """Directional derivatives (N, P) of N inputs' class scores along P CAVs at one layer."""
    g = feature_gradients(grads, features).to(vectors.dtype)
    if g.shape[1] != vectors.shape[1]:
        raise ValueError(f"gradients have {g.shape[1]} features but the CAVs {vectors.shape[1]}")
    return g @ vectors.T


def tcav_scores(sens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign-count score, magnitude score) per column of an (N, P) sensitivity matrix."""
    sign = (sens > 0).double().mean(0)
    pos = sens.clamp_min(0).double().sum(0)
    tot = sens.abs().double().sum(0)
    mag = torch.where(tot > 0, pos / tot.clamp_min(1e-300), torch.full_like(tot, 0.5))
    return sign.float(), mag.float()


@dataclass
class ConceptScore:
    """TCAV result of one concept at one layer (the fields of ``tcav.json``'s results)."""

    layer: str
    concept: str
    score: float
    score_std: float
    magnitude: float
    random_score: float
    random_std: float
    p_value: float
    significant: bool
    p_value_uncorrected: float | None = None
    direction: str = "not significant"
    runs: int = 0
    score_ci_low: float | None = None
    score_ci_high: float | None = None
    low_power: bool = False
    detectable_difference: float | None = None


@dataclass
class TCAVResult:
    """Scores with significance per (layer, concept), the per-run details and the CAVs they came from."""

    target: Any
    layers: list[str]
    results: list[ConceptScore]
    concepts: list[str]
    randoms: list[str]
    runs: dict[str, dict[str, dict[str, list[float]]]]
    cavs: CAVs
    class_index: list[int] | None = None
    options: dict = field(default_factory=dict)

    def correction(self) -> dict:
        """How the p-values were corrected: {"method", "tests", "note"}."""
        method = self.options.get("correction", "none")
        return {"method": method, "tests": len(self.results), "note": correction_note(method, len(self.results))}

    def flags(self) -> list[dict]:
        """Red flags of the run (``core.flags`` dicts): layers whose random baseline makes the test low-power,
        and layers where every run scores 0 or 1 (TCAV degenerate there)."""
        out = []
        for layer in self.layers:
            rows = [r for r in self.results if r.layer == layer]
            if rows and rows[0].low_power:
                out.append(red.flag(
                    "low_power", f"low power at {layer}: the random runs' scores swing (std {rows[0].random_std:.2f} "
                    f"over {rows[0].runs} runs), so the test detects with 80% power only differences from random "
                    f"of {rows[0].detectable_difference:.2f} or more (rule: 0.25); a 'not significant' here "
                    "means 'not measurable', not 'no effect'", layer=layer, random_std=rows[0].random_std,
                    detectable_difference=rows[0].detectable_difference))
            per_run = {c: self.runs.get(layer, {}).get(c, {}).get("score", []) for c in self.concepts}
            out.append(red.degenerate_tcav(layer, per_run))
        return [f for f in out if f]

    def headline(self, class_name: str | None = None) -> str:
        """One or two sentences answering the page's question from the corrected tests."""
        who = f"class {class_name or self.target}'s score"
        method = self.options.get("correction", "none")
        after = "" if method == "none" else f" after {CORRECTION_NAMES[method]}"
        parts = []
        for r in sorted(self.results, key=lambda r: r.p_value):
            if r.direction == "not significant":
                continue
            verb = "raises" if "above" in r.direction else "lowers"
            p = "p < 0.001" if r.p_value < 0.001 else f"p = {r.p_value:.2g}"
            parts.append(f"{r.concept} {verb} {who} at {r.layer} (TCAV {r.score:.2f} vs random "
                         f"{r.random_score:.2f}, {p}{after})")
        ns = sum(r.direction == "not significant" for r in self.results)
        if not parts:
            return f"No concept changes {who} measurably: all {len(self.results)} tests are not significant{after}."
        tail = f"; {ns} of {len(self.results)} tests are not significant" if ns else ""
        return "; ".join(parts) + tail + "."

    def to_json(self, class_name: str | None = None) -> dict:
        """The ``tcav.json`` structure: {"target", "layers", "headline", "correction", "flags",
        "low_power_rule", "results": [...]}."""
        return {"target": self.target, "layers": list(self.layers), "headline": self.headline(class_name),
                "correction": self.correction(), "flags": self.flags(), "low_power_rule": LOW_POWER_RULE,
                "results": [asdict(r) for r in self.results]}

    def details_json(self) -> dict:
        """Everything behind the scores: per-run sign-count and magnitude scores, CAV accuracies, raw p-values."""
        return {"target": self.target, "layers": self.layers, "concepts": self.concepts, "randoms": self.randoms,
                "runs": self.runs, "options": self.options, "class_index": self.class_index,
                "cav_accuracy": {layer: {f"{p}|{q}": float(a) for (p, q), a in
                                         zip(self.cavs.pairs, self.cavs.accuracy[layer].tolist())}
                                 for layer in self.layers}}

    def get(self, concept: str, layer: str) -> ConceptScore:
        """The result for one concept at one layer."""
        for r in self.results:
            if r.concept == concept and r.layer == layer:
                return r
        raise KeyError(f"no result for concept {concept!r} at layer {layer!r}")


def concept_score(test: Mapping[str, Any], score_std: float, magnitude: float, random_std: float) -> ConceptScore:
    """A ``ConceptScore`` from one row of ``concepts.stats.concept_tests`` and the spreads that row does not hold."""
    return ConceptScore(test["layer"], test["concept"], float(test["score"]), score_std, magnitude,
                        float(test["random_score"]), random_std, float(test["p_value"]), bool(test["significant"]),
                        float(test["p_value_uncorrected"]), test["direction"], int(test["runs"]),
                        test["score_ci_low"], test["score_ci_high"], bool(test["low_power"]),
                        float(test["detectable_difference"]))


def _as_sets(sets: Mapping[str, Images] | Sequence[Images], prefix: str) -> dict[str, Images]:
    if isinstance(sets, Mapping):
        return dict(sets)
    return {f"{prefix}{i}": s for i, s in enumerate(sets)}


def run_tcav(model: nn.Module, inputs: torch.Tensor, concepts: Mapping[str, Images],
             randoms: Mapping[str, Images] | Sequence[Images], layers: Sequence[str] | str,
             target: Target = "top1", *, cache: ActivationCache | None = None, preprocess: Any = None,
             batch_size: int | None = None, loss: str = "hinge", alpha: float = 0.01, features: str = "flatten",
             test_fraction: float = 0.33, seed: int = 0, significance: float = 0.05, bonferroni: bool = False,
             correction: str = "holm", **cav_options: Any) -> TCAVResult:
    """TCAV of ``target`` on the class ``inputs`` for each concept and layer, tested against the random sets.

    ``concepts`` maps a name to an image set and ``randoms`` holds R >= 2 random sets (a model-ready tensor
    each, or image paths with ``preprocess``). Every concept gets R runs (one CAV per random set), compared
    with R random-versus-random runs by a two-sided t-test; the p-values are corrected over all concept tests by
    ``correction`` (``"holm"``, ``"bonferroni"``, ``"bh"`` or ``"none"``; ``bonferroni=True`` means
    ``correction="bonferroni"``).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers:
        raise ValueError("no layers given")
    for n in layers:
        get_layer(model, n)
    concepts = dict(concepts)
    randoms = _as_sets(randoms, "random_")
    if not concepts:
        raise ValueError("no concepts given")
    if len(randoms) < 2:
        raise ValueError(f"significance testing needs at least 2 random sets, got {len(randoms)}")
    clash = set(concepts) & set(randoms)
    if clash:
        raise ValueError(f"names used both as concept and random set: {sorted(clash)}")
    if not 0 < significance < 1:
        raise ValueError(f"significance must be in (0, 1), got {significance}")
    if bonferroni:
        correction = "bonferroni"
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
    cache = cache or ActivationCache(None)
    fp = model_fingerprint(model)
    acts = {}
    for name, images in {**concepts, **randoms}.items():
        if isinstance(images, torch.Tensor):
            images = check_inputs(model, images)
        acts[name] = cache.activations(model, layers, images, preprocess=preprocess, batch_size=batch_size,
                                       model_fp=fp)
    rnames = list(randoms)
    R = len(rnames)
    pairs = [(c, r) for c in concepts for r in rnames] + [(rnames[i], rnames[(i + 1) % R]) for i in range(R)]
    if R == 2:
        pairs.pop()  # (r1, r0) would only mirror (r0, r1)
    cavs = train_cavs(acts, pairs, layers, loss=loss, alpha=alpha, test_fraction=test_fraction, seed=seed,
                      features=features, **cav_options)
    grads, idx = class_gradients(model, inputs, layers, target, batch_size=batch_size)

    results: list[ConceptScore] = []
    runs: dict[str, dict[str, dict[str, list[float]]]] = {}
    n_concept_pairs = len(concepts) * R
    concept_runs, random_runs, spread = [], {}, {}
    for layer in layers:
        sens = sensitivities(grads[layer].to(cavs.vectors[layer].device), cavs.vectors[layer], features)
        sign, mag = tcav_scores(sens)
        rand_sign = sign[n_concept_pairs:]
        runs[layer] = {"random": {"score": rand_sign.tolist(), "magnitude": mag[n_concept_pairs:].tolist(),
                                  "cav_accuracy": cavs.accuracy[layer][n_concept_pairs:].tolist()}}
        random_runs[layer] = rand_sign.tolist()
        for ci, c in enumerate(concepts):
            s = sign[ci * R:(ci + 1) * R]
            m = mag[ci * R:(ci + 1) * R]
            runs[layer][c] = {"score": s.tolist(), "magnitude": m.tolist(),
                              "cav_accuracy": cavs.accuracy[layer][ci * R:(ci + 1) * R].tolist()}
            concept_runs.append((layer, c, s.tolist()))
            spread[layer, c] = (float(s.std(unbiased=False)), float(m.mean()), float(rand_sign.std(unbiased=False)))
    for test in concept_tests(concept_runs, random_runs, significance, correction):
        layer, c = test["layer"], test["concept"]
        results.append(concept_score(test, *spread[layer, c]))
        runs[layer][c]["p_value_uncorrected"] = test["p_value_uncorrected"]
    t = target if isinstance(target, (int, str)) or target is None else (
        target.tolist() if isinstance(target, torch.Tensor) else list(target) if not callable(target) else "callable")
    return TCAVResult(t, layers, results, list(concepts), rnames, runs, cavs,
                      None if idx is None else idx.tolist(),
                      {"loss": loss, "alpha": alpha, "features": features, "test_fraction": test_fraction,
                       "seed": seed, "significance": significance, "bonferroni": correction == "bonferroni",
                       "correction": correction, "runs": R})
