"""What a model-randomization test will cost before it runs: the original model's maps plus one set of maps per
step, each method counted by its own row formula (``attribution.cost``) and timed by one forward / backward,
plus the test's own work (the randomized copy, the similarity of the maps at each step), timed once."""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.cost import Estimate, estimate, shorter_settings
from interpretorch.attribution.registry import get_method
from interpretorch.sanity.randomize import plan_steps, randomization_blocks, randomized_models
from interpretorch.sanity.similarity import METRICS, compare

__all__ = ["estimate_model_randomization"]


def estimate_model_randomization(model: nn.Module, inputs: torch.Tensor, methods: Sequence[str], *,
                                 mode: str = "cascading", blocks: Sequence[str] | None = None,
                                 granularity: str = "stages", layer: Any = None, batch_size: int | None = None,
                                 options: Mapping[str, Mapping[str, Any]] | None = None,
                                 max_steps: int | None = None, metrics: Sequence[str] = METRICS) -> Estimate:
    """Expected rows and seconds of ``model_randomization`` with these arguments: each method's rows on
    ``inputs`` times (1 + steps), the steps planned as the test plans them (``max_steps`` caps them). The
    seconds add to the rows' cost the test's own work, timed here on one image: the randomized copy, and the
    similarity ``metrics`` of each method's maps at every step and against its two baselines."""
    block_list = randomization_blocks(model, blocks, granularity)
    steps = len(plan_steps(block_list, mode))
    if max_steps is not None:
        steps = min(steps, int(max_steps))
    costs = estimate(model, inputs, methods, options, layer, batch_size)
    runs = 1 + steps  # the trained model's maps, then one set per step
    seconds = sum(c.seconds or 0.0 for c in costs) * runs + _overhead(model, inputs, methods, mode, block_list,
                                                                      steps, tuple(metrics))
    advice = {"steps": "--max-steps N (only the top N blocks; the verdict then looks at those steps only)"}
    return Estimate(sum(c.rows or 0 for c in costs) * runs, seconds, inputs.device.type,
                    tuple(c.method for c in costs if c.rows is None),
                    shorter_settings([("steps", seconds)], advice, seconds) if steps > 1 else ())


def _overhead(model: nn.Module, x: torch.Tensor, methods: Sequence[str], mode: str, block_list: list,
              steps: int, metrics: tuple[str, ...]) -> float:
    """Seconds of the test's work besides the model rows: one randomized copy, then per step and method one
    comparison of maps, and per method its two baselines (random and edge maps: two more comparisons). The
    comparisons are timed on one image's maps of the method's kind (random values) and scaled by the images:
    every similarity metric is computed image by image."""
    t0 = time.perf_counter()
    next(iter(randomized_models(model, mode, block_list)), None)
    total = time.perf_counter() - t0
    b, c, h, w = x.shape
    per_kind: dict[str, float] = {}
    for m in methods:
        kind = get_method(m).kind
        if kind not in per_kind:
            g = torch.Generator().manual_seed(0)
            shape = (1, c, h, w) if kind == "pixel" else (1, h, w)
            a, z = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
            t0 = time.perf_counter()
            compare(a, z, metrics)
            per_kind[kind] = (time.perf_counter() - t0) * b
        total += (steps + 2) * per_kind[kind]
    return total
