"""Measure the shipped GAN pair's causal findings over several seeds (not a test).

``PYTHONPATH=src python tests/gan/measure_margins.py 0 1 2 3 4`` dissects layer2 on the z stream ``seed`` and
intervenes on the stream ``seed + 1`` (seed 0: the settings of ``test_gan_shipped.py``), printing one JSON line
per seed with every number the test asserts on (output with torch 2.13.0, AMD EPYC AVX2: measured_margins.jsonl).
"""
from __future__ import annotations

import json
import sys

import torch

from interpretorch.gan import dissect_generator, intervene, shipped_pair


def measure(seed: int) -> dict:
    """The ablation, insertion and detector numbers of ``test_gan_shipped.py`` for ``seed``."""
    pair = shipped_pair()
    d = dissect_generator(pair.generator, pair.segmenter, ["layer2"], pair.classes, categories=pair.categories,
                          z_shape=pair.z_shape, samples=300, batch_size=50, seed=seed)
    r = intervene(pair.generator, pair.segmenter, d, "layer2", "disk", z_shape=pair.z_shape, k=20, samples=100,
                  batch_size=50, seed=seed + 1)
    top, rand, other = (a.to_dict() for a in r.ablations)
    ins = r.insertion.to_dict()
    s = d.layers["layer2"].summary()["detectors_per_concept"]
    keys = ("removed", "removed_band95", "ace_band95")
    return {"seed": seed, "top": {k: top[k] for k in keys}, "random": {k: rand[k] for k in keys},
            "other_removed": other["removed"],
            "insertion": {k: ins[k] for k in ("fraction_new_inside_region", "region_covered_after",
                                              "region_covered_before")},
            "shape_detectors": s.get("shape/disk", 0) + s.get("shape/cross", 0)}


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arg in sys.argv[1:] or ["0"]:
        print(json.dumps(measure(int(arg))), flush=True)
