"""Measure how much Extremal Perturbation's mask of one image depends on its batch-mates (not a test).

``PYTHONPATH=src python tests/attribution/measure_extremal_batch.py`` explains image 0 of several random
batches of three 64 px images on a random TinyCNN, alone and inside its batch, in float32 and in float64, and
prints the IoU of the two masks (> 0.5) and their largest difference for each seed.
"""
from __future__ import annotations

import sys

import torch

from interpretorch.attribution.masks import extremal_perturbation
from interpretorch.models import TinyCNN


def masks_alone_and_in_batch(seed: int, dtype: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Image 0's mask explained alone and inside a batch of 3 (random TinyCNN and images of ``seed``)."""
    torch.manual_seed(seed)
    model = TinyCNN(num_classes=5).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    alone = extremal_perturbation(model, x[:1], 0, dtype=dtype).extras["masks"][0, 0]
    batch = extremal_perturbation(model, x, 0, dtype=dtype).extras["masks"][0, 0]
    return alone, batch


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of the two masks' regions above 0.5 (1.0 when both are empty)."""
    ra, rb = a > 0.5, b > 0.5
    union = (ra | rb).sum()
    return float((ra & rb).sum() / union) if union else 1.0


if __name__ == "__main__":
    torch.set_num_threads(1)
    for seed in map(int, sys.argv[1:] or ["0", "1", "2", "3", "4"]):
        for dtype in ("float32", "float64"):
            a, b = masks_alone_and_in_batch(seed, dtype)
            print(f"seed {seed} {dtype}: IoU {iou(a, b):.3f}, max |diff| {float((a - b).abs().max()):.2e}",
                  flush=True)

# Output with torch 2.13.0 on an AMD EPYC (AVX2) CPU, one thread:
# seed 0 float32: IoU 0.000, max |diff| 9.97e-01
# seed 0 float64: IoU 1.000, max |diff| 0.00e+00
# seed 1 float32: IoU 0.080, max |diff| 9.69e-01
# seed 1 float64: IoU 1.000, max |diff| 0.00e+00
# seed 2 float32: IoU 1.000, max |diff| 1.00e-01
# seed 2 float64: IoU 1.000, max |diff| 0.00e+00
# seed 3 float32: IoU 0.000, max |diff| 9.98e-01
# seed 3 float64: IoU 1.000, max |diff| 0.00e+00
# seed 4 float32: IoU 0.269, max |diff| 7.13e-01
# seed 4 float64: IoU 1.000, max |diff| 0.00e+00
