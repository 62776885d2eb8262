"""Measure CRAFT and CRP on the shipped concept CNN over seeds 0-4; writes measured_craft_crp.jsonl beside it.

For each seed s and class c (0 stripes, 1 dots): the first 20 class-c images of ``make_concept_images(240,
seed=5 + 1000 * s)`` (the test images of ``concept_sets(s)``).

- CRAFT at ``features.10`` (k = 6, the default 32 crops of 0.4-0.6 of the side per image, seed s): the deciding
  concept is the one whose maps put the largest share of their mass inside the pasted patch; its importance rank
  and that share (``deciding_pooled``: the same pooled over the images, mass-weighted). Also the
  share of the mass inside the patch pooled over the images (``pooled``, in importance order: a concept split
  over two NMF components shows as two patch concepts on complementary images), the images on which each concept
  carries the most mass inside the patch (``patch_images``), and how faithfully the concepts rebuild the layer
  (``reconstruction``: the share of images keeping the model's class, the relative error, the NMF's error on its
  crops). For stripes, the orientation of each image's stripes (0, 45, 90 or 135 degrees, from the patch's
  structure tensor) grouped by the concept carrying the most mass inside its patch (``orientations``): the stripes
  split over NMF components follows the orientation.
- CRP at ``features.10`` (epsilon_plus): per image the channel with the most relevance for its class, and the
  share of the positive input relevance conditioned on it that falls inside the patch (the patch is 1/9 of the
  image); also for the plain LRP map.
- CRP along a TCAV direction (seeds 0-2, dots): the dots CAV at ``features.10`` (``run_tcav`` on the first 10
  class-1 images of ``concept_sets(s)`` against 3 random sets, channel means); the share of the relevance along
  it inside the dots patch of the first 20 dots test images, and the relevance along it beside the layer's.

Run: ``PYTHONPATH=src OMP_NUM_THREADS=1 python tests/concepts/measure_craft_crp.py``
"""
from __future__ import annotations

import json
import math
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


def stripe_orientation(image: torch.Tensor, box: torch.Tensor) -> int:
    """The stripes' orientation in the patch, to the nearest of 0, 45, 90, 135 degrees (structure tensor)."""
    x0, y0, x1, y1 = [int(v) for v in box.round().tolist()]
    gy, gx = torch.gradient(image.mean(0)[y0:y1, x0:x1].double())
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    angle = 0.5 * math.degrees(math.atan2(2 * jxy, jxx - jyy))
    return int(round(((angle + 90) % 180) / 45.0)) % 4 * 45


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
    inside = torch.zeros(res.concepts[0].maps.shape, dtype=torch.bool)
    for i, b in enumerate(boxes.round().long().tolist()):
        inside[i, b[1]:b[3], b[0]:b[2]] = True
    mass = [c.maps.clamp_min(0) for c in res.concepts]
    pooled = [float((m * inside).sum() / m.sum().clamp_min(1e-30)) for m in mass]
    dominant = torch.stack([(m * inside).flatten(1).sum(1) for m in mass]).argmax(0)
    orientations = {}
    if cls == 0:
        for i in range(len(images)):
            orientations.setdefault(int(dominant[i]) + 1, []).append(stripe_orientation(images[i], boxes[i]))
        orientations = {k: sorted(v) for k, v in sorted(orientations.items())}
    return {"what": "craft", "seed": seed, "class": cls, "deciding_rank": best + 1, "deciding_share": share[best],
            "importance": imp, "shares": share, "pooled": pooled,
            "patch_images": [int((dominant == j).sum()) for j in range(len(mass))],
            "deciding_pooled": pooled[best], "orientations": orientations,
            "reconstruction": res.options["reconstruction"],
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


def cav_row(model, seed: int) -> dict:
    """Share inside the patch and relevance of CRP conditioned on the dots CAV."""
    from conftest import concept_sets  # tests/concepts/conftest.py, beside this script

    from interpretorch.concepts.tcav import run_tcav

    s = concept_sets(seed)
    res = run_tcav(model, s["class1"][:10], {"dots": s["concepts"]["dots"]}, s["randoms"][:3], [LAYER], 1,
                   features="mean")
    v = res.cavs.vectors[LAYER][[p[0] for p in res.cavs.pairs].index("dots")]
    test = s["test"]
    idx = torch.nonzero(test.labels == 1).flatten()[:20]
    r = conditional_relevance(model, PREPROCESS.normalize(test.images[idx]), 1, LAYER, [v, list(range(48))])
    return {"what": "crp_cav", "seed": seed, "class": 1,
            "cav_share_mean": float(map_energy_inside(r.heatmaps[:, 0], test.boxes[idx]).mean()),
            "plain_share_mean": float(map_energy_inside(r.heatmaps[:, 1], test.boxes[idx]).mean()),
            "cav_relevance_mean": float(r.concept_relevance[:, 0].mean()),
            "layer_relevance_mean": float(r.concept_relevance[:, 1].mean())}


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
                print(json.dumps({k: v for k, v in row.items()
                                  if k not in ("importance", "shares", "pooled", "top_channels")}),
                      flush=True)
    for seed in range(3):
        rows.append(cav_row(model, seed))
        print(json.dumps(rows[-1]), flush=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
