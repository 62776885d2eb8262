"""Checked inputs: a (B, C, H, W) float batch, validated once and copied to the model's device."""
from __future__ import annotations

import torch
from torch import nn

from interpretorch.core.device import model_device

__all__ = ["check_inputs"]


def check_inputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Validate a (B, C, H, W) float batch and return a detached copy on the model's device (a copy, so a model
    whose first operation is in place cannot change the caller's tensor)."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor of shape (B, C, H, W), got {type(inputs).__name__}")
    if inputs.dim() == 3:
        raise ValueError(f"inputs have shape {tuple(inputs.shape)}; expected a batch (B, C, H, W) - "
                         "add a batch dimension with inputs[None]")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must have shape (B, C, H, W), got {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be floating point (preprocessed images), got {inputs.dtype}")
    if inputs.shape[0] == 0:
        raise ValueError("inputs hold no images (batch size 0)")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")
    device = model_device(model)
    x = inputs.detach()
    return x.to(device) if x.device != device else x.clone()
