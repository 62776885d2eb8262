"""What every attribution method shares: the checked method inputs, the layer to explain, the clean pass, the
chunked perturbed-rows loop, baselines, and the finish of region maps. (Device, input checks, batching, seeds
and targets are the ground floor's: :mod:`interpretorch.core`.)"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.capture import default_cam_layer, frozen
from interpretorch.core import check_inputs, chunks, rows_per_pass
from interpretorch.core.targets import (Target, check_finite, check_target, concat_outputs, split_target,
                                        target_indices, target_scores)
from interpretorch.explanation import normalize_maps, upsample
from interpretorch.models.layers import layer_name

__all__ = ["method_inputs", "resolve_layer", "clean_pass", "score_rows", "as_baseline", "finish_region", "row_scores"]

_DEFAULT_LAYER: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def method_inputs(model: nn.Module, inputs: torch.Tensor, target: Target,
                  batch_size: int | None) -> tuple[torch.Tensor, Target, int]:
    """The checked inputs (a copy on the model's device), the checked target and the rows per model call that
    one method call works with."""
    x = check_inputs(model, inputs)
    return x, check_target(target, x.shape[0]), rows_per_pass(batch_size, x.device)


def resolve_layer(model: nn.Module, layer: str | nn.Module | None, inputs: torch.Tensor) -> str:
    """Return the layer to use: the given one (validated) or the default CAM layer for these inputs."""
    if layer is not None:
        if isinstance(layer, str) and ":" in layer:
            from interpretorch.capture import parse_site

            parse_site(model, layer)
            return layer
        return layer_name(model, layer)
    # Keyed by the input shape and by which modules the model holds, so a model edited in place is searched
    # again; only the last few shapes are kept.
    key = (tuple(inputs.shape[1:]), inputs.dtype, tuple(id(m) for m in model.modules()))
    cache = _DEFAULT_LAYER.setdefault(model, {})
    if key not in cache:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = default_cam_layer(model, inputs)
    return cache[key]


def row_scores(out: torch.Tensor, target: Target, idx: torch.Tensor | None, score: str = "logit") -> torch.Tensor:
    """Score of each output row: class ``idx`` per row as a logit or probability, or ``target(out)``."""
    return target_scores(out, target, idx, score)


def clean_pass(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None
               ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One no-grad forward over the unperturbed images: class index per image (None for a callable target)
    and the outputs (B, ...), with the model left as it was."""
    n = x.shape[0]
    target = check_target(target, n)
    idx_all, outs = [], []
    with frozen(model):
        for sl in chunks(n, batch_size):
            out = model(x[sl])
            check_finite(out)
            idx = target_indices(out, split_target(target, sl))
            if idx is not None:
                idx_all.append(idx)
            outs.append(out)
    return (torch.cat(idx_all) if idx_all else None), concat_outputs(outs)


def score_rows(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], n_rows: int,
               make_rows: Callable[[torch.Tensor], tuple[torch.Tensor, object]], *,
               image_of: Callable[[torch.Tensor], torch.Tensor], device: torch.device, target: Target,
               idx: torch.Tensor | None, score: str, batch_size: int,
               consume: Callable[[torch.Tensor, torch.Tensor, object], None], what: str,
               frozen_model: nn.Module | None = None) -> None:
    """Score ``n_rows`` perturbed rows, ``batch_size`` per model call, without gradients.

    ``make_rows(r)`` builds the rows numbered ``r`` (a 1-D tensor) and returns (model inputs, extra);
    ``image_of(r)`` gives the image each row belongs to, whose class ``idx`` (or the callable ``target``)
    scores it; ``consume(rows' images, scores, extra)`` accumulates. ``model`` may be any function of the
    rows (the network after a layer, say); ``frozen_model`` is then the network it belongs to.
    """
    owner = frozen_model if frozen_model is not None else model
    with frozen(owner):
        for sl in chunks(n_rows, batch_size):
            r = torch.arange(sl.start, sl.stop, device=device)
            i = image_of(r)
            rows, extra = make_rows(r)
            o = model(rows)
            check_finite(o, f"outputs on {what}")
            consume(i, target_scores(o, target, None if idx is None else idx[i], score), extra)


def as_baseline(baseline, x: torch.Tensor) -> torch.Tensor:
    """Return ``baseline`` (a number, or a tensor shaped (C, H, W), (1, C, H, W) or (B, C, H, W)) expanded to ``x``."""
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if not isinstance(baseline, torch.Tensor):
        raise TypeError(f"baseline must be a number or a tensor, got {type(baseline).__name__}")
    b = baseline.detach().to(device=x.device, dtype=x.dtype)
    if b.dim() == x.dim() - 1:
        b = b[None]
    try:
        return b.expand_as(x)
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not match inputs of shape "
                         f"{tuple(x.shape)}; give a number, {tuple(x.shape[1:])}, (1, *{tuple(x.shape[1:])}) "
                         f"or {tuple(x.shape)}") from None




def finish_region(raw: torch.Tensor, size: tuple[int, int], relu: bool, normalize: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The end of every region method: optional ReLU of the layer-resolution map, bilinear upsampling to the
    input, optional min-max normalisation; returns (raw, maps)."""
    if relu:
        raw = F.relu(raw)
    maps = upsample(raw, size)
    if normalize:
        maps = normalize_maps(maps)
    return raw, maps
