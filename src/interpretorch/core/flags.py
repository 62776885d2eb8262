"""Red flags: diagnostics a page shows at its top and stores in its JSON, each a pure function of numbers a run
already has (no model calls). A flag is a plain dict ``{"code": str, "text": str, ...details}``: ``code`` names
the rule (a script reading the JSON tests it), ``text`` is the one sentence the page prints.

Rules and their thresholds:

- ``low_confidence``: the top-1 softmax probability of an explained image is below ``LOW_CONFIDENCE`` (0.5): the
  model is guessing (or the image lies outside what it was trained on), so its maps explain a guess;
- ``identical_maps``: two methods give the same maps to ``MAP_RTOL`` of the largest |value| on every image (with
  the reason when the coincidence is known, e.g. Grad-CAM, XGrad-CAM and HiResCAM after global average pooling);
- ``constant_maps``: a map with one value everywhere (all zero, typically): it says nothing about the image;
- ``road_order``: ROAD's most-relevant-first curve stays above its least-relevant-first curve: removing the
  pixels the map calls important hurts the model less than removing the unimportant ones;
- ``undefined_steps``: values undefined for some images (a sanity step whose maps are all zero): the mean rests
  on fewer images, and the page says how many;
- ``degenerate_tcav``: every run's TCAV score is 0 or 1, so the scores can only be multiples of 1/runs and the
  p-values repeat: all class images share the sign of the directional derivative, as at a layer whose gradient
  is the same for every image (a linear head after global pooling);
- ``random_beats_targeted``: an intervention on random units changes as much as (or more than) the intervention
  on the units chosen for the concept;
- ``includes_zero``: an effect whose 95 % interval contains zero: it is not established;
- ``below_detector``: units reported for a concept whose IoU is below the detector threshold;
- ``same_across_classes``: a method's map for another class equals its map for the top class;
- ``follows_confidence``: a per-image figure (Deletion AUC, say) that correlates with the model's starting
  confidence (Spearman |rho| >= 0.5, p < 0.05), so ranking images by it ranks them by confidence;
- ``flat_scores``: scores of one sign that vary by less than a factor 2: nothing stands out, whatever the
  colours suggest;
- ``insertion_outside``: units inserted in a region put most of their new pixels outside it (no more inside
  than the region's share of the image would give by chance).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

LOW_CONFIDENCE = 0.5
MAP_RTOL = 1e-5
DISAGREE_SHARE = 0.25
CONSERVATION_RTOL = 0.05
SMALL_SHARE = 0.1
FEW_IMAGES = 10

# Methods whose maps coincide on some architectures, and why (checked on the maps, never assumed).
KNOWN_COINCIDENCES = (
    (frozenset({"cam", "gradcam", "xgradcam", "hirescam", "shapleycam"}),
     "as when the CAM layer feeds global average pooling and a linear head: the class score's gradient is then "
     "the same at every position, so these CAMs all reduce to the head's weights times the activations "
     "(ShapleyCAM's second-order term vanishes for a linear head)"),
)


def flag(code: str, text: str, **details: Any) -> dict[str, Any]:
    """One red flag: its rule's ``code``, the sentence a page prints, and JSON-ready details."""
    return {"code": code, "text": text, **details}


def low_confidence(names: Sequence[str], top1: Sequence[float], classes: Sequence[str] | None = None,
                   threshold: float = LOW_CONFIDENCE) -> dict[str, Any] | None:
    """A flag naming the images whose top-1 probability is below ``threshold``; None when there is none."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if len(names) != len(top1) or (classes is not None and len(classes) != len(names)):
        raise ValueError("names, top-1 probabilities and classes must have one entry per image")
    low = [i for i, p in enumerate(top1) if p is not None and float(p) < threshold]
    if not low:
        return None
    parts = [f"{names[i]} ({classes[i] + ', ' if classes else ''}p = {float(top1[i]):.2f})" for i in low]
    return flag("low_confidence",
                f"Low confidence: {len(low)} of {len(names)} image(s) have a top-1 probability below {threshold:g}: "
                f"{'; '.join(parts)}. The model is unsure (or the image is unlike its training data); their maps "
                f"explain a guess.",
                images=[names[i] for i in low], probabilities=[float(top1[i]) for i in low], threshold=threshold,
                n=len(names))


def _same(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    """Maps equal up to a positive factor per image (each compared after dividing by its largest |value|)."""
    if a.shape != b.shape:
        return False
    for x, y in zip(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)):
        sx, sy = float(np.abs(x).max()), float(np.abs(y).max())
        if sx == 0 or sy == 0:
            if sx != sy:
                return False
            continue
        if float(np.abs(x / sx - y / sy).max()) > rtol:
            return False
    return True


def identical_maps(maps: Mapping[str, np.ndarray], rtol: float = MAP_RTOL) -> list[dict[str, Any]]:
    """Flags for groups of methods whose maps (``{method: (B, H, W)}``) are the same on every image up to a
    positive factor, to ``rtol`` of each map's largest |value|, with the reason when the coincidence is known."""
    arrays = {m: np.asarray(v, dtype=np.float64) for m, v in maps.items()}
    groups: list[list[str]] = []
    for m, a in arrays.items():
        if not np.isfinite(a).all() or float(np.abs(a).max(initial=0.0)) == 0.0:
            continue  # constant (all-zero) maps are flagged by constant_maps, not as identical to each other
        for g in groups:
            if _same(arrays[g[0]], a, rtol):
                g.append(m)
                break
        else:
            groups.append([m])
    out = []
    for g in groups:
        if len(g) < 2:
            continue
        reason = next((why for names, why in KNOWN_COINCIDENCES if set(g) <= names), None)
        n = next(iter(arrays[g[0]].shape[:1]), 0)
        out.append(flag("identical_maps",
                        f"Identical maps: {', '.join(g)} give the same map (to {rtol:g} of its maximum, up to a "
                        f"positive factor) on all {n} image(s)" + (f": {reason}." if reason else
                                                                     "; showing them apart adds nothing."),
                        methods=g, rtol=rtol, reason=reason, n=int(n)))
    return out


def constant_maps(maps: Mapping[str, np.ndarray], names: Sequence[str]) -> list[dict[str, Any]]:
    """Flags for methods with a constant map (one value everywhere) on some images (``{method: (B, H, W)}``)."""
    out = []
    for m, v in maps.items():
        a = np.asarray(v, dtype=np.float64).reshape(len(names), -1)
        const = [i for i, row in enumerate(a) if not np.isfinite(row).all() or float(np.ptp(row)) == 0.0]
        if const:
            which = ", ".join(names[i] for i in const)
            out.append(flag("constant_maps", f"Constant map: {m} gives one value everywhere on {len(const)} of "
                                             f"{len(names)} image(s) ({which}); such a map points at nothing.",
                            method=m, images=[names[i] for i in const], n=len(names)))
    return out


def road_order(method: str, morf: float | None, lerf: float | None) -> dict[str, Any] | None:
    """A flag when ROAD's most-relevant-first score (lower is better) is not below its least-relevant-first one."""
    if morf is None or lerf is None or morf < lerf:
        return None
    if morf == lerf:
        return flag("road_order", f"ROAD order: for {method}, both orders leave the model at {morf:.3g}: ROAD cannot "
                                  f"tell this map's ranking from its reverse here.",
                    method=method, morf=float(morf), lerf=float(lerf))
    return flag("road_order",
                f"ROAD order: for {method}, removing the most relevant pixels first leaves the model at {morf:.3g}, "
                f"no lower than removing the least relevant first ({lerf:.3g}): the map ranks pixels no better "
                f"than its reverse.", method=method, morf=float(morf), lerf=float(lerf))


def undefined_steps(what: str, defined: Sequence[int], n: int, steps: Sequence[str] | None = None
                    ) -> dict[str, Any] | None:
    """A flag when some of ``n`` values are undefined at some steps (``defined``: how many remain per step)."""
    short = [(i, int(k)) for i, k in enumerate(defined) if int(k) < n]
    if not short:
        return None
    label = [steps[i] if steps else f"step {i + 1}" for i, _ in short]
    least = min(k for _, k in short)
    return flag("undefined_steps",
                f"Undefined values: {what} is undefined for some images at {len(short)} step(s) "
                f"({', '.join(label[:4])}{', ...' if len(label) > 4 else ''}; e.g. an all-zero map has no rank "
                f"correlation); those means rest on as few as {least} of {n} image(s).",
                what=what, steps=label, defined=[k for _, k in short], n=n)


def degenerate_tcav(layer: str, run_scores: Mapping[str, Sequence[float]]) -> dict[str, Any] | None:
    """A flag when every run's TCAV score of every concept at ``layer`` is 0 or 1 (at least two runs)."""
    vals = [float(s) for scores in run_scores.values() for s in scores]
    runs = max((len(s) for s in run_scores.values()), default=0)
    if runs < 2 or not vals or any(v not in (0.0, 1.0) for v in vals):
        return None
    return flag("degenerate_tcav",
                f"Degenerate TCAV at {layer}: in every run all class images agree on the sign of the directional "
                f"derivative (each run scores 0 or 1), so scores are multiples of 1/{runs} and p-values repeat. "
                f"The test then counts runs, not images: this happens where the class score's gradient is the "
                f"same for every image (a linear head after global pooling) or when the class images are too "
                f"alike to disagree; use an earlier layer or more varied class images.", layer=layer, runs=runs)


def random_beats_targeted(what: str, targeted: float, random: float, *, unit: str = "") -> dict[str, Any] | None:
    """A flag when the random intervention's effect is at least the targeted one's (effects: larger is stronger)."""
    if targeted is None or random is None or random < targeted:
        return None
    return flag("random_beats_targeted",
                f"Random beats targeted: {what}: random units change {random:.3g}{unit}, the chosen units "
                f"{targeted:.3g}{unit}; the chosen units are not what causes the effect.",
                what=what, targeted=float(targeted), random=float(random))


def includes_zero(what: str, estimate: float, low: float | None, high: float | None) -> dict[str, Any] | None:
    """A flag when the 95 % interval [low, high] of an effect contains zero (the effect is not established)."""
    if low is None or high is None or not (low <= 0 <= high):
        return None
    return flag("includes_zero",
                f"No established effect: {what} is {estimate:+.3g} with a 95% interval [{low:+.3g}, {high:+.3g}] "
                f"that includes 0.", what=what, estimate=float(estimate), ci=[float(low), float(high)])


def below_detector(what: str, ious: Iterable[float], threshold: float) -> dict[str, Any] | None:
    """A flag when every IoU of the units reported for ``what`` is below the detector ``threshold``."""
    vals = [float(v) for v in ious]
    if not vals or max(vals) >= threshold:
        return None
    return flag("below_detector",
                f"Not detectors: the units used for {what} have IoU at most {max(vals):.3f}, below the detector "
                f"threshold {threshold:g}: by the dissection's own rule they do not detect it.",
                what=what, best_iou=max(vals), threshold=float(threshold))


def insertion_outside(what: str, inside: float | None, region_share: float) -> dict[str, Any] | None:
    """A flag when under half of the new pixels of an insertion fall inside its region, or no more than the
    region's share of the image (what scattering them at random would give)."""
    if inside is None or (inside >= 0.5 and inside > region_share):
        return None
    return flag("insertion_outside",
                f"Insertion misses its region: {what}: {100 * inside:.1f}% of the new pixels fall inside a region "
                f"covering {100 * region_share:.0f}% of the image; the units do not place the concept where they "
                f"are switched on.", what=what, inside=float(inside), region_share=float(region_share))


def same_across_classes(method: str, first: np.ndarray, other: np.ndarray, rank: int,
                        rtol: float = MAP_RTOL) -> dict[str, Any] | None:
    """A flag when ``method``'s maps for each image's rank-``rank`` class equal its top-class maps (both
    (B, H, W), to ``rtol`` up to a positive factor): the map does not depend on the class it explains."""
    a, b = np.asarray(first, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or not a.size or not _same(a, b, rtol):
        return None
    return flag("same_across_classes",
                f"Class-blind maps: {method} draws the same map for the rank-{rank} class as for the top class on all "
                f"{a.shape[0]} image(s); it does not say what separates the classes.",
                method=method, rank=rank, n=int(a.shape[0]))


def follows_confidence(what: str, rho: float | None, p_value: float | None, n: int, alpha: float = 0.05,
                       strength: float = 0.5) -> dict[str, Any] | None:
    """A flag when a per-image figure correlates with the model's starting confidence (Spearman |rho| at least
    ``strength`` with p below ``alpha``): ranking images by it mostly ranks them by confidence."""
    if rho is None or p_value is None or abs(rho) < strength or p_value >= alpha:
        return None
    return flag("follows_confidence",
                f"Follows confidence: {what} correlates with the model's top-1 probability (Spearman rho = {rho:.2f}, "
                f"p = {p_value:.2g}, n = {n}); images ranked by it are mostly ranked by how sure the model was.",
                what=what, rho=float(rho), p_value=float(p_value), n=int(n))


def flat_scores(what: str, scores: Sequence[float], ratio: float = 2.0) -> dict[str, Any] | None:
    """A flag when scores of one sign vary by less than a factor ``ratio`` (largest / smallest |score|): a map
    stretched to its own maximum would look peaked while it barely varies."""
    v = np.abs(np.asarray([float(x) for x in scores], dtype=np.float64))
    if v.size < 2 or not np.isfinite(v).all() or v.min() == 0:
        return None
    signs = np.sign(np.asarray(scores, dtype=np.float64))
    if not (signs == signs[0]).all() or v.max() / v.min() >= ratio:
        return None
    return flag("flat_scores", f"Nearly flat: {what} ranges only from {v.min():.3g} to {v.max():.3g} (a factor "
                               f"{v.max() / v.min():.2f}); no word stands out much.",
                what=what, low=float(v.min()), high=float(v.max()))


def methods_disagree(what: str, tops: Mapping[str, Sequence[Any]], share: float = DISAGREE_SHARE
                     ) -> dict[str, Any] | None:
    """A flag when methods (``{method: top item per row}``, at least two, rows aligned) name different top items
    on at least ``share`` of the rows."""
    methods = list(tops)
    if len(methods) < 2:
        return None
    rows = min(len(v) for v in tops.values())
    if rows == 0:
        return None
    differ = [i for i in range(rows) if len({tops[m][i] for m in methods}) > 1]
    if len(differ) / rows < share:
        return None
    return flag("methods_disagree",
                f"Methods disagree: {', '.join(methods)} name different top {what} on {len(differ)} of {rows} "
                f"row(s) ({100 * len(differ) / rows:.0f}%, flagged from {100 * share:.0f}%): which token matters "
                f"depends on the method.", methods=methods, rows=[int(i) for i in differ], n=rows, share=share)


def ignores_target(method: str, why: str) -> dict[str, Any]:
    """A flag for a method whose map does not depend on the output it explains (``why``: the reason)."""
    return flag("ignores_target", f"Ignores the target: {method} {why}; its rows do not say what made that token "
                                  f"likely.", method=method)


def not_conserved(what: str, total: float, score: float, rtol: float = CONSERVATION_RTOL) -> dict[str, Any] | None:
    """A flag when ``total`` (relevance summed at a layer) differs from ``score`` by more than ``rtol`` of |score|."""
    if total is None or score is None or abs(total - score) <= rtol * abs(score):
        return None
    return flag("not_conserved",
                f"Not conserved: {what}: the layer's relevance sums to {total:.4g}, the explained score is "
                f"{score:.4g} (off by {abs(total - score) / abs(score) * 100 if score else float('inf'):.0f}%, "
                f"tolerance {100 * rtol:g}%); biases and the rules' stabilisers take or add the rest, so shares "
                f"of the layer's relevance are not shares of the score.",
                what=what, total=float(total), score=float(score), rtol=rtol)


def small_share(what: str, top: float | None, channel: Any, threshold: float = SMALL_SHARE) -> dict[str, Any] | None:
    """A flag when the largest single-channel share ``top`` of a layer's relevance is below ``threshold``."""
    if top is None or top >= threshold:
        return None
    return flag("small_share",
                f"Spread relevance: {what}: the most relevant channel ({channel}) carries {100 * top:.1f}% of the "
                f"class relevance at the layer (flagged below {100 * threshold:g}%); no single channel explains "
                f"much of the decision.", what=what, share=float(top), threshold=threshold)


def estimate_out_of_range(what: str, values: Mapping[str, float], designs: int, low: float = 0.0, high: float = 1.0
                          ) -> dict[str, Any] | None:
    """A flag naming the estimates (``{name: value}``) outside [low, high], which their definition excludes."""
    out = {k: float(v) for k, v in values.items() if v is not None and not low <= float(v) <= high}
    if not out:
        return None
    parts = ", ".join(f"{k} {v:.3g}" for k, v in out.items())
    return flag("estimate_out_of_range",
                f"Estimate out of range: {what} must lie in [{low:g}, {high:g}], but {parts}: estimator noise at "
                f"{designs} designs; more designs narrow it.", what=what, values=out, designs=int(designs))


def few_images(what: str, n: int, minimum: int = FEW_IMAGES) -> dict[str, Any] | None:
    """A flag when ``what`` is a mean over fewer than ``minimum`` images."""
    if n >= minimum:
        return None
    return flag("few_images", f"Few images: {what} rests on {n} image(s) (flagged below {minimum}); its mean and "
                              f"spread are rough.", what=what, n=int(n), minimum=minimum)


def one_draw(what: str, seed: int) -> dict[str, Any]:
    """A flag for a result of one random draw (``seed``) whose spread between draws was not measured."""
    return flag("one_draw", f"One draw: {what} come from one random draw (seed {seed}); the spread between draws "
                            f"was not measured, so run other seeds before reading small differences.",
                what=what, seed=int(seed))


def no_fall(what: str, first: float, last: float, start: str, end: str) -> dict[str, Any] | None:
    """A flag when a count expected to fall from ``start`` to ``end`` does not (``last >= first``)."""
    if last < first:
        return None
    return flag("no_fall", f"No fall: {what} goes from {first:g} at {start} to {last:g} at {end}; it does not fall.",
                what=what, first=float(first), last=float(last))


def flag_texts(flags: Iterable[dict[str, Any] | str | None]) -> list[str]:
    """The sentences of ``flags`` (strings pass through; None entries are dropped)."""
    return [f if isinstance(f, str) else f["text"] for f in flags if f]
