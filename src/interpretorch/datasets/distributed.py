"""The same dataset job in one process or under ``torchrun``: which part of the data is this process's, and
waiting for the others. Each rank takes every ``world``-th image of the list, so no image is done twice."""
from __future__ import annotations

import datetime
import os
from typing import Sequence, TypeVar

import torch

from interpretorch.core.distributed import world  # noqa: F401 - re-exported: the one torch.distributed world

T = TypeVar("T")


def init_from_env(device: str) -> tuple[int, int, str]:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1): gloo on the CPU, nccl on GPUs,
    one GPU per local rank; returns (rank, world size, device)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1, device
    if not torch.distributed.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        # A rank waits at the final barrier while the others finish their shards: allow long runs.
        torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=12))
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def barrier() -> None:
    """Wait for every process (nothing in a single process)."""
    if world()[1] > 1:
        torch.distributed.barrier()


def shard(items: Sequence[T], rank: int, size: int) -> list[T]:
    """This rank's part of ``items``: every ``size``-th item from position ``rank``."""
    if not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in 0..{size - 1}")
    return list(items[rank::size])


def finish() -> None:
    """Leave the process group if this process joined one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
