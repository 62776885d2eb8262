"""Input checks and batching helpers shared by every attribution method."""
from __future__ import annotations

import weakref
from typing import Iterator

import torch
from torch import nn

from interpretorch.models.layers import default_cam_layer, layer_name

_DEFAULT_LAYER: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter or buffer (CPU for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def check_inputs(model: nn.Module, inputs: torch.Tensor, expect_dim: int = 4) -> torch.Tensor:
    """Validate a (B, C, H, W) float batch and move it to the model's device."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (B, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() == expect_dim - 1:
        raise ValueError(f"inputs have shape {tuple(inputs.shape)}; expected a batch (B, C, H, W) - "
                         "add a batch dimension with inputs[None]")
    if inputs.dim() != expect_dim:
        raise ValueError(f"inputs must have shape (B, C, H, W), got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be floating point (preprocessed images), got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs hold no images (batch size 0)")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")
    return inputs.detach().to(model_device(model))


def resolve_layer(model: nn.Module, layer: str | nn.Module | None, inputs: torch.Tensor) -> str:
    """Return the dotted layer name to use: the given one (validated) or the default CAM layer."""
    if layer is not None:
        return layer_name(model, layer)
    key = (tuple(inputs.shape[1:]), inputs.dtype)
    cache = _DEFAULT_LAYER.setdefault(model, {})
    if key not in cache:
        cache[key] = default_cam_layer(model, inputs)
    return cache[key]


def chunks(n: int, size: int | None) -> Iterator[slice]:
    """Yield slices covering range(n) in pieces of at most ``size`` (all at once when None)."""
    if size is not None and size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {size}")
    step = n if not size else size
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def split_target(target, sl: slice, n: int):
    """Return the part of a per-image ``target`` that belongs to images ``sl`` (shared targets pass through)."""
    if isinstance(target, (list, tuple)) and len(target) == n:
        return list(target)[sl]
    if isinstance(target, torch.Tensor) and target.dim() == 1 and target.numel() == n and n > 1:
        return target[sl]
    return target
