"""Measure test_paper.py's similarities over several randomization seeds (not a test).

``PYTHONPATH=src python tests/sanity/measure_margins.py 0 1 2 3 4`` prints, per seed, the mean Spearman
similarity of gradient and Grad-CAM at each of the top three steps, Guided Backprop's smallest per-photo
similarity, and Guided Backprop's smallest lead over the other two.
"""
from __future__ import annotations

import json
import sys

import torch
from skimage import data

from interpretorch.models import load_model
from interpretorch.sanity import model_randomization


def measure(seed: int) -> dict:
    """The numbers test_paper.py asserts on, for randomization ``seed``."""
    lm = load_model("efficientnet_lite0")
    x = lm.preprocess([data.chelsea(), data.coffee(), data.astronaut(), data.rocket()])
    r = model_randomization(lm.model, x, ["gradient", "gradcam", "guided_backprop"], max_steps=3,
                            metrics=["spearman_abs"], keep_maps=0, seed=seed)
    mean = {m: torch.nanmean(r.similarity[m]["spearman_abs"], 0) for m in r.methods}
    lead = mean["guided_backprop"] - torch.maximum(mean["gradient"], mean["gradcam"])
    return {"seed": seed, "gradient_max": float(mean["gradient"].max()), "gradcam_max": float(mean["gradcam"].max()),
            "guided_min": float(r.similarity["guided_backprop"]["spearman_abs"].min()), "lead_min": float(lead.min()),
            "verdicts": {m: r.verdicts[m].passes for m in r.methods}}


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["0"]:
        print(json.dumps(measure(int(arg))), flush=True)
