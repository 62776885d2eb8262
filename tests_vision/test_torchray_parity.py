"""Extremal Perturbation against TorchRay 1.0.0.2 (the paper's reference code) on a sample photo.

TorchRay is installed without its dataset dependencies (``pip install --no-deps torchray``). Both codes are run
for the same number of optimisation steps from the same start; TorchRay returns the mask of its last forward pass
(before its last step), so it runs one iteration more. Over hundreds of steps the optimisation amplifies rounding
differences (see benchmarks/README.md), so the agreement is checked over the first steps, where it is exact up to
float32 rounding.
"""
from __future__ import annotations

import pytest
import torch
from torchray.attribution.extremal_perturbation import Perturbation
from torchray.attribution.extremal_perturbation import extremal_perturbation as torchray_ep

from interpretorch import explain
from interpretorch.attribution.masks import SmoothMaxMask, apply_pyramid, blur_pyramid
from interpretorch.models import load_model


@pytest.fixture(scope="module")
def setup():
    from skimage import data

    loaded = load_model("efficientnet_lite0")
    model = loaded.model.eval()
    x = loaded.preprocess([data.chelsea()])
    return model, x


def test_pyramid_and_mask_generator_match_torchray(setup):
    from torchray.attribution.extremal_perturbation import MaskGenerator

    model, x = setup
    ref = Perturbation(x, num_levels=8, max_blur=20)
    ours = blur_pyramid(x, 8, 20.0)
    mask = torch.rand(1, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    assert torch.allclose(apply_pyramid(ours, mask), ref.apply(mask), atol=2e-6)
    gen_ref = MaskGenerator(ref.pyramid.shape[2:], 7, 21)
    gen = SmoothMaxMask(tuple(x.shape[-2:]), 7, 21.0, x.device)
    assert list(gen.grid) == list(gen_ref.shape_in) and list(gen.canvas) == list(gen_ref.shape_out)
    params = torch.rand(2, 1, *gen.grid, generator=torch.Generator().manual_seed(1))
    (m_ref, full_ref), (m, full) = gen_ref.generate(params), gen(params)
    assert torch.allclose(m, m_ref, atol=1e-5) and torch.allclose(full, full_ref, atol=1e-5)


@pytest.mark.parametrize("steps,tol", [(1, 2e-4), (20, 5e-3)])
def test_the_first_steps_match_torchray(setup, steps, tol):
    model, x = setup
    ours = explain(model, x, "extremal_perturbation", options={"extremal_perturbation": {
        "iterations": steps, "lr": 0.01, "regul_growth": 1.0035, "areas": [0.1]}})
    target = int(ours.target[0])
    ref, _ = torchray_ep(model, x, target, areas=[0.1], max_iter=steps + 1)
    for p in model.parameters():  # TorchRay leaves the parameters frozen
        p.requires_grad_(True)
    diff = (ours.extras["masks"][0, 0] - ref[0, 0]).abs()
    print(f"{steps} step(s): max |ours - TorchRay| {float(diff.max()):.2e}, mean {float(diff.mean()):.2e}")
    assert float(diff.max()) < tol
