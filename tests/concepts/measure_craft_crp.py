"""Measure CRAFT and CRP on the shipped concept CNN over seeds 0-4; writes measured_craft_crp.jsonl beside it.

For each seed s and class c (0 stripes, 1 dots): the first 20 class-c images of ``make_concept_images(240,
seed=5 + 1000 * s)`` (the test images of ``concept_sets(s)``).

- CRAFT at ``features.10`` (k = 6, crops of 0.4-0.6 of the side, seed s): the deciding concept is the one whose
  maps put the largest share of their mass inside the pasted patch; its importance rank and that share.
- CRP at ``features.10`` (epsilon_plus): per image the channel with the most relevance for its class, and the
  share of the positive input relevance conditioned on it that falls inside the patch (the patch is 1/9 of the
  image); also for the plain LRP map.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python tests/concepts/measure_craft_crp.py``
"""
from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import torch

from interpretorch.attribution.crp import conditional_relevance
from interpretorch.concepts.craft import craft, map_energy_inside
from interpretorch.concepts.toy import PREPROCESS, load_concept_cnn, make_concept_images

LAYER = "features.10"
SCALE = (0.4, 0.6)


def class_images(seed: int, cls: int, n: int = 20):
    """The first ``n`` images of class ``cls`` in seed ``seed``'s test set, and their patch boxes."""
    test = make_concept_images(240, seed=5 + 1000 * seed)
    idx = torch.nonzero(test.labels == cls).flatten()[:n]
    return test.images[idx], test.boxes[idx]


def craft_row(model, seed: int, cls: int) -> dict:
    """Rank and map share of the deciding concept."""
    images, boxes = class_images(seed, cls)
    t = time.perf_counter()
    res = craft(model, images, PREPROCESS.normalize, cls, LAYER, n_concepts=6, scale=SCALE, show=len(images),
                seed=seed)
    seconds = time.perf_counter() - t
    share = [float(map_energy_inside(c.maps, boxes).mean()) for c in res.concepts]
    best = max(range(len(share)), key=lambda j: share[j])
    imp = [c.importance for c in res.concepts]
    return {"what": "craft", "seed": seed, "class": cls, "deciding_rank": best + 1, "deciding_share": share[best],
            "importance": imp, "shares": share,
            "margin_to_next": imp[best] - max([v for j, v in enumerate(imp) if j != best]), "seconds": seconds}


def crp_row(model, seed: int, cls: int) -> dict:
    """Share of the top channel's conditional relevance inside the patch."""
    images, boxes = class_images(seed, cls)
    x = PREPROCESS.normalize(images)
    plain = conditional_relevance(model, x, cls, LAYER, [list(range(48))])
    top = plain.channel_relevance.argmax(1)
    shares = []
    for i in range(x.shape[0]):
        r = conditional_relevance(model, x[i:i + 1], cls, LAYER, [int(top[i])])
        shares.append(float(map_energy_inside(r.heatmaps[:, 0], boxes[i:i + 1])[0]))
    plain_share = map_energy_inside(plain.heatmaps[:, 0], boxes)
    return {"what": "crp", "seed": seed, "class": cls, "top_channel_share_mean": sum(shares) / len(shares),
            "top_channel_share_min": min(shares), "plain_lrp_share_mean": float(plain_share.mean()),
            "top_channels": top.tolist()}


def main() -> None:
    """Measure all seeds and classes and write the jsonl file."""
    warnings.filterwarnings("ignore", category=Warning, module="sklearn")
    torch.set_num_threads(1)
    model, _ = load_concept_cnn()
    out = Path(__file__).with_name("measured_craft_crp.jsonl")
    rows = []
    for seed in range(5):
        for cls in (0, 1):
            for fn in (craft_row, crp_row):
                row = fn(model, seed, cls)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("importance", "shares", "top_channels")}),
                      flush=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
