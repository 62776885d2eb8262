"""GAN Dissection speed: dissecting one generator layer over N samples as a ratio to generating and segmenting
those N samples (the floor: the passes the method cannot avoid).

The shipped DCGAN and segmenter (``interpretorch.gan.shipped_pair``), layer ``layer2`` (96 x 8 x 8) unless
``--layer`` says otherwise:

- **floor**: the same seeded z in batches of ``--batch``, ``segmenter(generator(z)).argmax(1)`` under
  ``torch.no_grad()``, nothing else.
- **dissect**: ``dissect_generator(...)`` on the same z: the same generation and segmentation with the layer
  recorded, the streaming top-quantile thresholds, then the IoU tallies (from the cached activations; with
  ``--no-cache`` the generator and segmenter run a second time).

Rounds alternate after one warm-up; times are medians of ``--repeats`` rounds. ``--clock cpu`` counts this
process's CPU seconds (steadier on a shared machine). Ratio = floor time / dissect time (1.0: no overhead).

    python benchmarks/bench_gandissect.py [--samples 2000] [--batch 64] [--layer layer2] [--threads 1]
                                          [--repeats 3] [--clock wall|cpu] [--no-cache] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from interpretorch.capture import frozen
from interpretorch.gan import dissect_generator, sample_z, shipped_pair


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--layer", default="layer2")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    pair = shipped_pair(args.device)
    g, s = pair.generator, pair.segmenter

    def floor() -> float:
        z = sample_z(args.samples, pair.z_shape, 0)
        t0 = clock()
        with frozen(g), frozen(s):
            for i in range(0, args.samples, args.batch):
                s(g(z[i:i + args.batch].to(args.device))).argmax(1)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return clock() - t0

    def dissect() -> float:
        t0 = clock()
        dissect_generator(g, s, [args.layer], pair.classes, categories=pair.categories, z_shape=pair.z_shape,
                          samples=args.samples, batch_size=args.batch, cache_bytes=0 if args.no_cache else 1 << 30)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return clock() - t0

    floor(), dissect()  # warm-up
    times: dict[str, list[float]] = {"floor": [], "dissect": []}
    for _ in range(args.repeats):
        times["floor"].append(floor())
        times["dissect"].append(dissect())
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"samples": args.samples, "batch": args.batch, "layer": args.layer, "threads": torch.get_num_threads(),
              "clock": args.clock, "cache": not args.no_cache, "device": args.device,
              "floor_s": med["floor"], "dissect_s": med["dissect"], "ratio": med["floor"] / med["dissect"],
              "times": times, "torch": torch.__version__, "machine": platform.machine()}
    print(f"{args.samples} samples, layer {args.layer}, batch {args.batch}, {result['threads']} thread(s), "
          f"{args.clock} clock: generate+segment {med['floor']:.3f} s, dissect {med['dissect']:.3f} s, "
          f"ratio {result['ratio']:.2f} (target >= 0.7)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
