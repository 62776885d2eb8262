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


# Rows per model call for methods that expand each image into many rows (IG steps, noise samples, occlusion
# windows, RISE masks) when the caller gives no batch_size. On CPU small batches are faster per row:
# EfficientNet-Lite0 at 224 px on the 2-core development VM took 17-28 ms per forward at 2-8 rows, 31-36 ms at
# 16, 45 ms at 32 and 62-64 ms at 64 (and fwd+bwd 37 ms at 4-16 rows against 60 ms at 32), since the activations
# of a small batch stay in cache. GPUs want large batches.
CPU_ROWS, ACCELERATOR_ROWS = 8, 64


def rows_per_pass(batch_size: int | None, device: torch.device) -> int:
    """Return ``batch_size`` when given, else the default rows per model call on ``device``."""
    if batch_size is None:
        return CPU_ROWS if torch.device(device).type == "cpu" else ACCELERATOR_ROWS
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


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


SCORES = ("logit", "softmax")


def callable_rows(target, out: torch.Tensor) -> torch.Tensor:
    """Apply a callable target to a batch of (perturbed) outputs whose rows may come from different images."""
    s = target(out)
    if not isinstance(s, torch.Tensor) or s.shape != (out.shape[0],):
        raise ValueError(f"a callable target must return one score per row of the outputs: expected shape "
                         f"({out.shape[0]},), got {getattr(s, 'shape', type(s).__name__)}")
    return s


def row_scores(out: torch.Tensor, target, idx: torch.Tensor | None, score: str = "logit") -> torch.Tensor:
    """Score of each output row: the class ``idx`` per row as a logit or softmax probability, or ``target(out)``."""
    if idx is None:
        return callable_rows(target, out)
    if score == "softmax":
        out = out.softmax(dim=1)
    elif score != "logit":
        raise ValueError(f"unknown score {score!r}; choose one of {SCORES}")
    return out.gather(1, idx[:, None]).squeeze(1)


def clean_pass(model: nn.Module, x: torch.Tensor, target, batch_size: int | None
               ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One no-grad forward over the unperturbed images: class index per image (None for a callable target)
    and the outputs (B, ...), with the model in eval mode and its state restored afterwards."""
    from interpretorch.capture import capture
    from interpretorch.targets import check_finite, target_indices

    idx_all, outs = [], []
    n = x.shape[0]
    with capture(model, [], grad=False), torch.no_grad():
        for sl in chunks(n, batch_size):
            out = model(x[sl])
            check_finite(out)
            idx = target_indices(out, split_target(target, sl, n))
            if idx is not None:
                idx_all.append(idx)
            outs.append(out)
    return (torch.cat(idx_all) if idx_all else None), torch.cat(outs)


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


def seed_for(seed: int, *stream: int) -> int:
    """A well-mixed 63-bit seed for sub-stream ``stream`` of ``seed`` (so each sample draws the same noise
    whatever the chunking)."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(1, np.uint64)[0] >> 1)
