"""Run by test_gan_distributed.py, alone or under torchrun: dissect a random generator and save the counts."""
from __future__ import annotations

import os
import sys

import torch

from gan_toys import RandomGenerator, RandomSegmenter
from interpretorch.gan import dissect_generator


def counts(batch_size: int) -> dict:
    """Dissect two layers of a fixed random generator over 23 samples; thresholds, top samples and counts."""
    g, s = RandomGenerator().eval(), RandomSegmenter().eval()
    res = dissect_generator(g, s, ["up1", "up2.0"], s.class_names, z_shape=(8,), samples=23, quantile=0.03,
                            batch_size=batch_size, top_images=13)  # 13 > the 12 and 11 samples of the shards
    out = {n: {"thresholds": ld.thresholds, "top": ld.top_indices, **ld.tally.state_dict()}
           for n, ld in res.layers.items()}
    out["concept_pixels"] = res.concept_pixels
    return out


def main(out: str, batch_size: int) -> None:
    torch.set_num_threads(1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        torch.distributed.init_process_group("gloo")
    result = counts(batch_size)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        torch.save(result, out)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
