"""Measure the ground-truth tests' statistics on the shipped concept CNN over several seeds (not a test).

``PYTHONPATH=src python tests/concepts/measure_margins.py 0 1 2 3 4`` prints one JSON line per seed (the output for
the shipped weights on an AMD EPYC AVX2 CPU with torch 2.13.0 is in ``measured_margins.jsonl``): the concept
sets are those of ``conftest.concept_sets(seed)`` and the discovery methods get ``seed=seed``. The tests' docstrings
quote the worst value over seeds 0-4 and assert a bound with a margin from it.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import concept_sets  # noqa: E402

from interpretorch.concepts.cache import ActivationCache, compute_activations  # noqa: E402
from interpretorch.concepts.cav import train_cavs  # noqa: E402
from interpretorch.concepts.discovery import ace, nmf_concepts  # noqa: E402
from interpretorch.concepts.maps import concept_maps  # noqa: E402
from interpretorch.concepts.tcav import class_gradients, run_tcav, sensitivities, tcav_scores  # noqa: E402
from interpretorch.concepts.toy import PREPROCESS, load_concept_cnn  # noqa: E402

LATE, MID, DISC = "features.13", "features.6", "features.10"


def _centred_in_box(concept, boxes) -> float:
    hits = 0
    for p in concept.patches:
        b = boxes[p["image"]]
        x0, y0, x1, y1 = p["box"]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        hits += bool(b[0] <= cx < b[2] and b[1] <= cy < b[3])
    return hits / len(concept.patches)


def measure(seed: int) -> dict:
    """Every statistic the ground-truth tests assert on, for the sets of ``seed``."""
    model, _ = load_concept_cnn()
    sets = concept_sets(seed)
    out: dict = {"seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        res = run_tcav(model, sets["class0"], {**sets["concepts"], **sets["random_concepts"]}, sets["randoms"],
                       [MID, LATE], target=0, cache=ActivationCache(tmp))
    for layer in (MID, LATE):
        s = res.get("stripes", layer)
        out[f"stripes_{layer}"] = {"score": s.score, "p": s.p_value}
        out[f"solid_p_min_{layer}"] = res.get("solid", layer).p_value
        out[f"rnd_p_min_{layer}"] = min(res.get(f"rnd{k}", layer).p_value for k in range(4))
    out["dots_late_score"] = res.get("dots", LATE).score
    out["tcav"] = {layer: {c: [round(res.get(c, layer).score, 4), float(f"{res.get(c, layer).p_value:.3g}")]
                           for c in [*sets["concepts"], *sets["random_concepts"]]} for layer in (MID, LATE)}
    # the Captum comparison's sign counts
    pairs_sets = {"stripes": sets["concepts"]["stripes"], "solid": sets["concepts"]["solid"],
                  "r0": sets["randoms"][0], "r1": sets["randoms"][1]}
    pairs = [("stripes", "r0"), ("stripes", "r1"), ("solid", "r0"), ("r0", "r1")]
    acts = {k: compute_activations(model, v, [MID]) for k, v in pairs_sets.items()}
    cavs = train_cavs(acts, pairs, [MID])
    grads, _ = class_gradients(model, sets["class0"], [MID], 0)
    sign, _ = tcav_scores(sensitivities(grads[MID], cavs.vectors[MID]))
    out["captum_sign"] = [float(v) for v in sign]
    # concept maps: share of peaks inside the stripes patch
    test = sets["test"]
    idx = torch.nonzero(test.labels == 0).flatten()[:40]
    x = PREPROCESS.normalize(test.images[idx])
    flat_cav = res.cavs.vectors[LATE][res.cavs.index("stripes", "random_0")]
    mean_cav = train_cavs({k: compute_activations(model, v, [LATE]) for k, v in
                           {"stripes": sets["concepts"]["stripes"], "r0": sets["randoms"][0]}.items()},
                          [("stripes", "r0")], [LATE], features="mean").vectors[LATE][0]
    for features, v in (("flatten", flat_cav), ("mean", mean_cav)):
        maps = concept_maps(model, x, v, LATE, features=features)
        flat = maps[:, 0].flatten(1).argmax(1)
        ys, xs = flat // 48, flat % 48
        b = test.boxes[idx]
        inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
        out[f"map_inside_{features}"] = float(inside.float().mean())
    # discovery on the first 20 class-0 test images
    idx20 = torch.nonzero(test.labels == 0).flatten()[:20]
    images, boxes = test.images[idx20], test.boxes[idx20]
    nmf = nmf_concepts(model, images, PREPROCESS.normalize, DISC, 0, n_concepts=6, seed=seed)
    best = max(nmf.concepts[:3], key=lambda c: _centred_in_box(c, boxes))
    out["nmf"] = {"best_centred": _centred_in_box(best, boxes), "score": best.score, "p": best.p_value,
                  "significant": best.significant, "importance": best.importance,
                  "max_importance_elsewhere": max([c.importance for c in nmf.concepts
                                                   if _centred_in_box(c, boxes) < 0.25], default=None)}
    res_ace = ace(model, images, PREPROCESS.normalize, DISC, 0, resolutions=(9, 16, 25), compactness=200.0,
                  n_clusters=15, seed=seed)
    out["ace_top3_centred"] = [_centred_in_box(c, boxes) for c in res_ace.concepts[:3]]
    out["ace_all"] = [(round(_centred_in_box(c, boxes), 3), round(c.score, 3), round(c.p_value, 4))
                      for c in res_ace.concepts]
    res_mid = ace(model, images, PREPROCESS.normalize, MID, 0, resolutions=(9, 16, 25), compactness=200.0,
                  n_clusters=15, seed=seed)
    out["ace_mid_all"] = [(round(_centred_in_box(c, boxes), 3), round(c.score, 3), round(c.p_value, 4))
                          for c in res_mid.concepts]
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    for s in sys.argv[1:] or ["0"]:
        print(json.dumps(measure(int(s))), flush=True)
