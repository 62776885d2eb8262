"""Network Dissection speed: images per second of dissect() as a ratio to plain inference on the same data.

EfficientNet-Lite0 (pretrained), layer ``_blocks.15`` (the last MBConv block, 320 x 7 x 7 at 224 px) unless
``--layers`` says otherwise, over a synthetic Broden-format probe set (``make_probe``: 224 px images, 112 px
masks, as Broden). Both sides read the images from disk through the same DataLoader (batch size, workers):

- **inference** (the floor): one pass, ``model(images)`` under ``torch.no_grad()``, images only.
- **dissect**: ``dissect(model, dataset, layers, ...)``, both passes (thresholds, then IoU), all counts. With
  the activation cache (default) the second pass reads only the masks; ``no cache`` runs the model twice.

Rounds are interleaved after one warm-up; times are medians of ``--repeats`` rounds. ``--clock cpu`` times the
process's CPU seconds (``time.process_time``), steadier than wall time on a shared machine; it only sees the
work of this process, so use it with ``--workers 0``.

    python benchmarks/bench_dissect.py [--images 200] [--batch 16] [--workers 0] [--threads N] [--repeats 3]
                                       [--layers _blocks.15] [--device cpu] [--data DIR] [--json out.json]
                                       [--clock wall|cpu]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader

from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.dissect.probe import make_probe
from interpretorch.dissect.run import dissect
from interpretorch.models import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--layers", default="_blocks.15")
    p.add_argument("--device", default="cpu")
    p.add_argument("--data", default=None, help="an existing Broden-format folder (default: a new probe set)")
    p.add_argument("--json", default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = p.parse_args()
    if args.clock == "cpu" and args.workers:
        p.error("--clock cpu does not see DataLoader worker processes; use --workers 0")
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        t0 = time.perf_counter()
        make_probe(tmp.name, args.images, args.size, seed=0)
        print(f"probe set: {args.images} images at {args.size} px in {time.perf_counter() - t0:.1f} s")
        args.data = tmp.name
    loaded = load_model("efficientnet_lite0", device=args.device)
    model = loaded.model
    ds = BrodenDataset(args.data, mean=loaded.preprocess.mean, std=loaded.preprocess.std)
    layers = args.layers.split(",")
    dev = torch.device(args.device)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def inference() -> None:
        images = BrodenDataset(args.data, mean=loaded.preprocess.mean, std=loaded.preprocess.std, labels=False)
        with torch.no_grad():
            for batch in DataLoader(images, batch_size=args.batch, num_workers=args.workers, collate_fn=collate):
                model(batch["image"].to(dev, non_blocking=True))
        sync()

    def run_dissect(cache: bool) -> None:
        dissect(model, ds, layers, batch_size=args.batch, workers=args.workers,
                cache_bytes=(1 << 30) if cache else 0)
        sync()

    jobs = {"inference": inference, "dissect": lambda: run_dissect(True),
            "dissect (no cache)": lambda: run_dissect(False)}
    times: dict[str, list[float]] = {k: [] for k in jobs}
    names = list(jobs)
    for r in range(args.repeats + 1):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = clock()
            jobs[k]()
            if r:  # round 0 warms up
                times[k].append(clock() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    n = len(ds)
    out = {"clock": args.clock, "images": n, "size": args.size, "batch": args.batch, "workers": args.workers, "layers": layers,
           "device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
           "machine": platform.machine(),
           "seconds": med, "images_per_s": {k: n / v for k, v in med.items()},
           "ratio_to_inference": {k: med["inference"] / v for k, v in med.items()}}
    for k in names:
        print(f"{k:20s} {med[k]:7.2f} s  {n / med[k]:7.1f} images/s  ratio to inference "
              f"{med['inference'] / med[k]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
