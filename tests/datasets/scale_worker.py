"""Run by the dataset tests in a subprocess: explain and evaluate a generated dataset, optionally killing
itself with SIGKILL after some batches (a crash that leaves no chance to clean up)."""
from __future__ import annotations

import os
import signal
import sys

import torch

from scale_data import PRE, tiny_model
from interpretorch.datasets import explain_dataset, open_images

METHODS = ["gradcam", "gradient"]
METRICS = ["deletion", "average_drop", "infidelity"]
METRIC_OPTIONS = {"deletion": {"step": 0.25}, "infidelity": {"n_perturb": 3}}


def run(data: str, out: str, *, resume: bool = False, kill_after: int = 0, per_batch: int = 2,
        progress: bool = False, shard_images: int | None = None, on_batch=None, sig: int = signal.SIGKILL,
        save_maps: bool = False):
    """The job every test of this folder compares: 2 images per batch, one shard per batch by default;
    ``kill_after`` batches it sends itself ``sig``."""
    def kill(batches: int, written: int) -> None:
        if kill_after and batches >= kill_after:
            os.kill(os.getpid(), sig)

    return explain_dataset(tiny_model(), open_images(data), out, preprocess=PRE, methods=METHODS, metrics=METRICS,
                           metric_options=METRIC_OPTIONS, images_per_batch=per_batch,
                           shard_images=shard_images or per_batch, resume=resume, on_batch=on_batch or kill,
                           progress=progress, bootstrap_resamples=200, save_maps=save_maps)


if __name__ == "__main__":  # DATA OUT fresh|resume KILL_AFTER [SHARD_IMAGES [KILL|TERM [maps]]]
    from interpretorch.runstate import Terminated

    torch.set_num_threads(1)
    try:
        run(sys.argv[1], sys.argv[2], resume=sys.argv[3] == "resume", kill_after=int(sys.argv[4]),
            shard_images=int(sys.argv[5]) if len(sys.argv) > 5 else None,
            sig=getattr(signal, f"SIG{sys.argv[6]}") if len(sys.argv) > 6 else signal.SIGKILL,
            save_maps=len(sys.argv) > 7 and sys.argv[7] == "maps")
    except Terminated:
        sys.exit(143)
