"""The paper's qualitative finding on the pretrained EfficientNet-Lite0 and the sample photos.

Measured once over all 19 blocks (cascading, init "reset", running statistics kept, seed 0, 4 photos), mean Spearman
rank correlation of the absolute maps with the original ones, top block first:

    gradient         0.49 0.47 0.46 0.38 0.42 0.43 0.28 0.30 0.38 0.34 0.18 0.31 0.16 0.16 0.18 0.16 0.10 0.06 0.03
    gradcam          0.19 -.12 0.23 0.14 0.10 0.13 -.00 -.01 -.01 -.00 -.00 -.00 -.01 -.01 -.01 -.01 -.01 -.01 -.01
    guided_backprop  1.00 0.99 0.99 0.98 0.97 0.96 0.87 0.75 0.81 0.60 0.52 0.55 0.46 0.45 0.42 0.40 0.33 0.33 0.31

Gradient and Grad-CAM lose most of their similarity as soon as the classifier is random; Guided Backprop keeps
0.96-1.00 over the top six blocks and stays above 0.5 until a dozen blocks are random. This test checks the top
three blocks (the part of the curves that costs little and already separates the methods).
"""
from __future__ import annotations

import pytest

import torch

from interpretorch.sanity import model_randomization


@pytest.mark.numerics
def test_gradient_and_gradcam_decorrelate_while_guided_backprop_stays(pretrained, sample_batch, snapshot):
    """Measured at randomization seed 0 (``measure_margins.py``, output in ``measured_margins.jsonl``): gradient's
    mean similarity at most 0.49 (assert < 0.6), Grad-CAM's 0.23 (< 0.4), Guided Backprop's smallest per photo
    0.975 (> 0.9), its lead over both at least 0.51 (> 0.3). Seeds 1-4 were not measured yet (12 min a seed on
    the loaded 2-core machine)."""
    model = pretrained.model
    snap = snapshot(model)
    r = model_randomization(model, sample_batch, ["gradient", "gradcam", "guided_backprop"], max_steps=3,
                            metrics=["spearman_abs"], keep_maps=0)
    snap.assert_unchanged()
    assert r.steps == ["_fc", "_conv_head+_bn1", "_blocks.15"]
    mean = {m: torch.nanmean(r.similarity[m]["spearman_abs"], 0) for m in r.methods}
    # Gradient and Grad-CAM: below 0.6 (Grad-CAM below 0.4) from the first step on, in the mean over the photos.
    assert (mean["gradient"] < 0.6).all(), mean["gradient"]
    assert (mean["gradcam"] < 0.4).all(), mean["gradcam"]
    # Guided Backprop: still above 0.9 with the top three blocks random, on every photo ...
    assert (r.similarity["guided_backprop"]["spearman_abs"] > 0.9).all(), mean["guided_backprop"]
    # ... and clearly above both others at every step.
    assert (mean["guided_backprop"] - torch.maximum(mean["gradient"], mean["gradcam"]) > 0.3).all()
    # The verdict rule over these three steps already separates them.
    assert r.verdicts["gradient"].passes and r.verdicts["gradcam"].passes
    assert not r.verdicts["guided_backprop"].passes
