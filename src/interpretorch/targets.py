"""Turn a user's ``target`` (top1, int, ints per image, or callable) into per-image scores."""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

Target = Union[str, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor], None]


def target_indices(outputs: torch.Tensor, target: Target) -> torch.Tensor | None:
    """Return one class index per image (B,), or None when ``target`` is a callable."""
    if callable(target) and not isinstance(target, torch.Tensor):
        return None
    if outputs.dim() != 2:
        raise ValueError(f"class targets need (B, num_classes) outputs, got shape {tuple(outputs.shape)}; "
                         "pass a callable target for other heads")
    b, k = outputs.shape
    if target is None or (isinstance(target, str) and target == "top1"):
        idx = outputs.detach().argmax(dim=1)
    elif isinstance(target, str):
        raise ValueError(f"unknown target {target!r}; use 'top1', an int, a list of ints or a callable")
    elif isinstance(target, int):
        idx = torch.full((b,), target, dtype=torch.long, device=outputs.device)
    else:
        idx = torch.as_tensor(target, dtype=torch.long, device=outputs.device).reshape(-1)
        if idx.numel() == 1:
            idx = idx.expand(b).clone()
        if idx.numel() != b:
            raise ValueError(f"got {idx.numel()} targets for {b} images; give one per image or a single int")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise ValueError(f"target class out of range [0, {k}): {idx.tolist()}")
    return idx


def target_scores(outputs: torch.Tensor, target: Target, indices: torch.Tensor | None = None) -> torch.Tensor:
    """Return the (B,) scores to explain: the chosen logit per image, or ``target(outputs)``."""
    if callable(target) and not isinstance(target, torch.Tensor):
        scores = target(outputs)
        if not isinstance(scores, torch.Tensor) or scores.shape != (outputs.shape[0],):
            raise ValueError(f"a callable target must return a (B,) tensor, got "
                             f"{getattr(scores, 'shape', type(scores))} for B={outputs.shape[0]}")
        return scores
    if indices is None:
        indices = target_indices(outputs, target)
    return outputs.gather(1, indices[:, None]).squeeze(1)


def check_finite(outputs: torch.Tensor, what: str = "model outputs") -> None:
    """Raise a clear error when ``outputs`` contain NaN or infinity."""
    if not torch.isfinite(outputs).all():
        raise FloatingPointError(f"{what} contain NaN or infinite values; check the input and the model")
