"""The torch.distributed world this process is part of (one process when none is initialised)."""
from __future__ import annotations

import torch

__all__ = ["world"]


def world() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
