"""The one batching rule: ``batch_size`` is the number of rows put through the model in one call, everywhere.

A row is whatever one method feeds the model: an image, an interpolation step of Integrated Gradients, a noisy
copy of SmoothGrad, an occluded window, a RISE mask, a masked input of Score-CAM, an ablated channel of
Ablation-CAM, a perturbed copy in a metric. When the caller gives no ``batch_size`` the default depends only on
the device: small batches are fastest per row on a CPU (their activations stay in cache: EfficientNet-Lite0 at
224 px on the 2-core development VM took 17-28 ms per forward at 2-8 rows, 31-36 ms at 16, 45 ms at 32 and
62-64 ms at 64), large ones on an accelerator.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from interpretorch.core.heap import kept_heap
from interpretorch.core.progress import current

CPU_ROWS, ACCELERATOR_ROWS = 8, 64


def check_batch_size(batch_size: object) -> int | None:
    """Return ``batch_size`` when it is None or a positive int, else raise a ValueError naming it."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer (rows per model call) or None, got {batch_size!r}")
    return batch_size


def rows_per_pass(batch_size: int | None, device: torch.device | str) -> int:
    """Return ``batch_size`` when given (validated), else the default rows per model call on ``device``."""
    size = check_batch_size(batch_size)
    if size is None:
        return CPU_ROWS if torch.device(device).type == "cpu" else ACCELERATOR_ROWS
    return size


def chunks(n: int, size: int | None) -> Iterator[slice]:
    """Yield slices covering range(n) in pieces of at most ``size`` rows (all at once when None).

    Each slice's rows count on the progress sink bound by :func:`interpretorch.core.progress.track` once the
    caller moves past it (the outermost loop only).
    """
    step = check_batch_size(size) or max(n, 1)
    progress = current()
    with kept_heap():  # each chunk's tensors reuse the pages the last one freed
        if progress is None:
            for start in range(0, n, step):
                yield slice(start, min(n, start + step))
            return
        outermost = progress.depth == 0
        progress.depth += 1
        try:
            for start in range(0, n, step):
                stop = min(n, start + step)
                yield slice(start, stop)
                if outermost:
                    progress.advance(stop - start)  # the chunk's model call is done when the caller asks for the next
        finally:
            progress.depth -= 1


def group_steps(n: int, size: int, n_steps: int,
                counted: Callable[[slice, int], int] | None = None) -> Iterator[tuple[slice, int]]:
    """Yield (images, step) for groups of at most ``size`` of ``n`` images, every step of a group before the next
    group; each pair's rows (the group's images, or ``counted(group, step)`` of them where some rows only fill
    the step) count on the progress sink as ``chunks`` counts a chunk's."""
    progress = current()
    outermost = progress is not None and progress.depth == 0
    if progress is not None:
        progress.depth += 1
    try:
        with kept_heap():
            for start in range(0, n, check_batch_size(size) or max(n, 1)):
                group = slice(start, min(n, start + size))
                for k in range(n_steps):
                    yield group, k
                    if outermost:
                        progress.advance(group.stop - group.start if counted is None else counted(group, k))
    finally:
        if progress is not None:
            progress.depth -= 1

