"""CRAFT's options against the concept CNN's ground truth: where does the deciding concept rank, and do the concepts
rebuild the layer faithfully? Seeds 0-4 x both classes, as ``tests/concepts/measure_craft_crp.py``.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/craft_options.py [--only "NAME;..."]

For each setting (k = 6 concepts, 32 crops of 0.4-0.6 of the side per image, 32 designs, the class probability at
``features.10`` unless the setting says otherwise) and each run: the Sobol rank of the deciding concept (the one
whose maps put the largest mean share of their mass inside the pasted patch), that share (``half``: runs where it
is above 0.5), whether the first-ranked concept lies on the patch (more than 0.25 of its map mass pooled over the
images inside the patch, which covers 1/9 of the image: a deciding concept split over two NMF components counts),
the share of images whose activations rebuilt from the concepts keep the model's predicted class, and the NMF's
relative error on the crops it was fitted to. ``seed + 100`` settings draw other crops, NMF initialisations and
Sobol scramblings for the same images (CRAFT's ``seed`` is s + 100 for seed s's images).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "concepts"))
from measure_craft_crp import SCALE, class_images  # noqa: E402

from interpretorch.concepts.craft import craft, map_energy_inside  # noqa: E402
from interpretorch.concepts.toy import PREPROCESS, load_concept_cnn  # noqa: E402

SETTINGS = {
    "default": {},
    "seed + 100": {"seed_offset": 100},
    "seed + 200": {"seed_offset": 200},
    "8 crops per image (earlier default)": {"crops_per_image": 8},
    "8 crops, seed + 100": {"crops_per_image": 8, "seed_offset": 100},
    "8 crops, seed + 200": {"crops_per_image": 8, "seed_offset": 200},
    "8 crops, NMF converged (max_iter 20000, tol 1e-8)": {"crops_per_image": 8,
                                                          "nmf_options": {"max_iter": 20000, "tol": 1e-8}},
    "8 crops, NMF init random": {"crops_per_image": 8, "nmf_options": {"init": "random"}},
    "8 crops, NMF init random, seed + 100": {"crops_per_image": 8, "nmf_options": {"init": "random"},
                                             "seed_offset": 100},
    "8 crops, NMF init random, seed + 200": {"crops_per_image": 8, "nmf_options": {"init": "random"},
                                             "seed_offset": 200},
    "NMF init random": {"nmf_options": {"init": "random"}},
    "NMF init random, seed + 100": {"nmf_options": {"init": "random"}, "seed_offset": 100},
    "NMF init random, seed + 200": {"nmf_options": {"init": "random"}, "seed_offset": 200},
    "designs 256": {"nb_design": 256},
    "logit": {"score": "logit"},
    "k = 4": {"n_concepts": 4},
    "k = 8": {"n_concepts": 8},
    "16 crops per image": {"crops_per_image": 16},
    "NMF converged (max_iter 20000, tol 1e-8)": {"nmf_options": {"max_iter": 20000, "tol": 1e-8}},
    "crops 0.8-1.0": {"scale": (0.8, 1.0)},
    "layer features.13": {"layer": "features.13"},
}


def one_run(model, seed: int, cls: int, options: dict) -> dict:
    """Rank of the deciding concept, whether the first concept lies on the patch, and the reconstruction."""
    images, boxes = class_images(seed, cls)
    kw = {"n_concepts": 6, "scale": SCALE, "seed": seed, "layer": "features.10", **options}
    layer = kw.pop("layer")
    kw["seed"] += kw.pop("seed_offset", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = craft(model, images, PREPROCESS.normalize, cls, layer, show=len(images), **kw)
    share = [float(map_energy_inside(c.maps, boxes).mean()) for c in res.concepts]
    inside = torch.zeros(res.concepts[0].maps.shape, dtype=torch.bool)
    for i, b in enumerate(boxes.round().long().tolist()):
        inside[i, b[1]:b[3], b[0]:b[2]] = True
    top = res.concepts[0].maps.clamp_min(0)
    best = max(range(len(share)), key=lambda j: share[j])
    return {"rank": 1 + best, "share": share[best], "crop_fit": res.options["reconstruction"]["crop_fit_error"],
            "first_on_patch": float((top * inside).sum() / top.sum().clamp_min(1e-30)) > 0.25,
            "same_prediction": res.options["reconstruction"]["same_prediction"]}


def main() -> None:
    """Run every setting over the ten runs and print one line per setting."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=None, help="semicolon-separated setting names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model, _ = load_concept_cnn()
    names = args.only.split(";") if args.only else list(SETTINGS)
    for name in names:
        t = time.perf_counter()
        rows = [one_run(model, s, c, SETTINGS[name]) for s in range(5) for c in (0, 1)]
        ranks = [r["rank"] for r in rows]
        print(json.dumps({"setting": name, "ranks": ranks, "first": sum(r == 1 for r in ranks),
                          "half": sum(r["share"] > 0.5 for r in rows),
                          "shares": [round(r["share"], 2) for r in rows],
                          "crop_fit": [round(min(r["crop_fit"] for r in rows), 3),
                                       round(max(r["crop_fit"] for r in rows), 3)],
                          "first_on_patch": sum(r["first_on_patch"] for r in rows),
                          "same_prediction": [round(r["same_prediction"], 2) for r in rows],
                          "seconds": round(time.perf_counter() - t)}), flush=True)


if __name__ == "__main__":
    main()
