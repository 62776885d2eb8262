"""What a model-randomization test will cost before it runs: the original model's maps plus one set of maps per
step, each method counted by its own row formula (``attribution.cost``) and timed by one forward / backward."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.cost import Estimate, estimate, shorter_settings
from interpretorch.sanity.randomize import plan_steps, randomization_blocks

__all__ = ["estimate_model_randomization"]


def estimate_model_randomization(model: nn.Module, inputs: torch.Tensor, methods: Sequence[str], *,
                                 mode: str = "cascading", blocks: Sequence[str] | None = None,
                                 granularity: str = "stages", layer: Any = None, batch_size: int | None = None,
                                 options: Mapping[str, Mapping[str, Any]] | None = None,
                                 max_steps: int | None = None) -> Estimate:
    """Expected rows and seconds of ``model_randomization`` with these arguments: each method's rows on
    ``inputs`` times (1 + steps), the steps planned as the test plans them (``max_steps`` caps them)."""
    steps = len(plan_steps(randomization_blocks(model, blocks, granularity), mode))
    if max_steps is not None:
        steps = min(steps, int(max_steps))
    costs = estimate(model, inputs, methods, options, layer, batch_size)
    runs = 1 + steps  # the trained model's maps, then one set per step
    seconds = sum(c.seconds or 0.0 for c in costs) * runs
    advice = {"steps": "--max-steps N (only the top N blocks; the verdict then looks at those steps only)"}
    return Estimate(sum(c.rows or 0 for c in costs) * runs, seconds, inputs.device.type,
                    tuple(c.method for c in costs if c.rows is None),
                    shorter_settings([("steps", seconds)], advice, seconds) if steps > 1 else ())
