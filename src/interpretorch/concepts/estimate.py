"""What a TCAV run will cost before it runs: one forward per image of every concept and random set whose
activations are not cached yet, one forward and backward per class image (the class gradients), and one forward
per class image for each concept map drawn; timed by one forward / backward on the model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.cost import Estimate, shorter_settings, time_per_row
from interpretorch.concepts.cache import ActivationCache, Images, images_fingerprint, model_fingerprint

__all__ = ["estimate_tcav"]


def _set_rows(images: Images) -> int:
    return int(images.shape[0]) if isinstance(images, torch.Tensor) else len(list(images))


def estimate_tcav(model: nn.Module, inputs: torch.Tensor, concepts: Mapping[str, Images],
                  randoms: Mapping[str, Images] | Sequence[Images], layers: Sequence[str] | str, *,
                  cache: ActivationCache | None = None, preprocess: Any = None, batch_size: int | None = None,
                  concept_maps: int = 0) -> Estimate:
    """Expected rows and seconds of ``run_tcav`` with these sets and layers (a set every layer of which is in
    ``cache`` costs nothing), plus ``concept_maps`` concept maps of the class images."""
    layers = [layers] if isinstance(layers, str) else list(layers)
    sets = {**dict(concepts), **(dict(randoms) if isinstance(randoms, Mapping)
                                 else {f"random_{i}": s for i, s in enumerate(randoms)})}
    fp = model_fingerprint(model) if cache is not None and cache.root is not None else None
    forward_rows = 0
    for images in sets.values():
        if fp is not None:
            if not isinstance(images, torch.Tensor):
                images = [Path(p) for p in images]
            key = images_fingerprint(images, preprocess)
            if all((cache.root / f"{cache.key(fp, n, key)}.pt").exists() for n in layers):
                continue
        forward_rows += _set_rows(images)
    n = int(inputs.shape[0])
    forward_rows += n * int(concept_maps)
    forward, both = time_per_row(model, inputs, batch_size)
    sets_seconds = (forward_rows - n * int(concept_maps)) * forward
    seconds = forward_rows * forward + n * both
    advice = {"concept and random sets": "--set-size N (fewer images per generated concept and random set) or "
                                         "fewer --runs"}
    return Estimate(forward_rows + n, seconds, inputs.device.type, (),
                    shorter_settings([("concept and random sets", sets_seconds)], advice, seconds))
