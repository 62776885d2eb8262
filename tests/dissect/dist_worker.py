"""Run by test_distributed.py, alone or under torchrun: dissect the probe set and save the counts (rank 0)."""
from __future__ import annotations

import os
import sys

import torch

from interpretorch.dissect.run import dissect
from interpretorch.models import TinyCNN


def counts(data: str, batch_size: int) -> dict:
    """Dissect two layers of a fixed TinyCNN over ``data``; return thresholds, top images and all counts."""
    model = TinyCNN(num_classes=3, width=4).eval()
    res = dissect(model, data, ["features.2", "features.8"], quantile=0.02, batch_size=batch_size,
                  top_images=12)  # 12 > the 11 and 10 images of the two shards
    return {n: {"thresholds": ld.thresholds, "top": ld.top_indices, **ld.tally.state_dict()}
            for n, ld in res.layers.items()}


def main(data: str, out: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("gloo")
    result = counts(data, batch_size)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        torch.save(result, out)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
