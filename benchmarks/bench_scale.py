"""Dataset runs at scale: ``evaluate --methods gradcam --metrics deletion,insertion,average_drop`` over generated
224 px images on EfficientNet-Lite0 - peak resident memory per dataset size, images per second as a ratio to the
floor (the forward and backward rows the work needs, timed on the same model in the same process), and the
same run under ``torchrun --nproc-per-node 2``.

    python benchmarks/bench_scale.py --sizes 64,256,1024 [--torchrun 64] [--step 0.01] [--threads 1]
                                     [--floor-every 1] [--workers 0] [--work DIR]

Each size runs in a fresh process (peak RSS is per process). Per image the work needs one forward + backward
to the CAM layer (Grad-CAM), S forward rows for deletion and S for insertion (S = 100 at the default 1% steps;
the clean score is reused at one end of each curve) and one for Average Drop: 2S + 1 forward rows + 1
forward/backward row. The floor times exactly those rows, in batches of the same size, after every batch of ours
(or every K-th batch with ``--floor-every K``, to spend less time on it at large sizes).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

METHODS, METRICS = ["gradcam"], ["deletion", "insertion", "average_drop"]


def forward_rows_per_image(step: float) -> int:
    """Forward rows per image: deletion + insertion steps (each reuses the clean score at one end) + the masked
    input of Average Drop."""
    from interpretorch.metrics._common import step_counts

    n_steps = step_counts(224 * 224, step).numel() - 1
    return 2 * n_steps + 1


def make_images(folder: Path, n: int, size: int = 224, seed: int = 0) -> None:
    """Write synthetic shapes-on-textures images 0..n-1 as PNG (drawn at 160 px, the textures' limit, then
    resized to ``size``); existing files are kept."""
    from PIL import Image

    from interpretorch.data.synthetic import make_image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        f = folder / f"img{i:05d}.png"
        if not f.exists():
            img = make_image(seed, i, 160)[0]
            im = Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8))
            im.resize((size, size), Image.BICUBIC).save(f)


def write_list(work: Path, n: int) -> Path:
    """A list file naming the first ``n`` images."""
    lst = work / f"list_{n}.txt"
    lst.write_text("".join(f"images/img{i:05d}.png\n" for i in range(n)))
    return lst


class Floor:
    """The rows one batch of the work needs, timed: ``forward_rows_per_image(step)`` forward rows per image
    (no grad) and one forward + backward to the CAM layer per image, in batches of ``len(x)`` rows."""

    def __init__(self, model, x, layer: str, step: float, clock) -> None:
        self.model, self.x, self.layer, self.clock = model, x, layer, clock
        self.calls = forward_rows_per_image(step)  # forward calls of len(x) rows = rows per image
        self.seconds = 0.0
        self.batches = 0

    def batch(self) -> float:
        """Run one batch's floor; returns (and adds up) its seconds."""
        import torch

        from interpretorch.capture import capture, frozen

        t0 = self.clock()
        with frozen(self.model):
            with torch.no_grad():
                for _ in range(self.calls):
                    self.model(self.x)
            with capture(self.model, [self.layer], grad=True) as rec:
                out = self.model(self.x)
                score = out.gather(1, out.argmax(1, keepdim=True)).sum()
                torch.autograd.grad(score, rec[self.layer])
        dt = self.clock() - t0
        self.seconds += dt
        self.batches += 1
        return dt


def one(args: argparse.Namespace) -> None:
    """Run one size in this process and print a JSON line."""
    import torch

    from interpretorch.datasets import explain_dataset, open_images
    from interpretorch.models import load_model

    work, n = Path(args.work), args.one
    torch.set_num_threads(args.threads)
    loaded = load_model("efficientnet_lite0")
    data = open_images(write_list(work, n))
    out = work / f"out_{n}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    from interpretorch.datasets.streams import ImageStream

    cpu = args.clock == "cpu"
    clock = time.process_time if cpu else time.perf_counter
    x = loaded.preprocess.normalize(torch.stack([ImageStream(data, loaded.preprocess)[i]["image"] for i in range(8)]))
    floor = Floor(loaded.model, x, loaded.cam_layer, args.step, clock)
    ours = {"seconds": 0.0, "last": clock()}

    rss_trace = []  # the process's peak RSS (MB) after each batch, to see whether it climbs with the images

    def on_batch(batches: int, written: int) -> None:
        # interleaved: a batch of ours, then the floor of one batch, so a change of load hits both alike
        ours["seconds"] += clock() - ours["last"]
        rss_trace.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        if (batches - 1) % args.floor_every == 0:
            floor.batch()
        ours["last"] = clock()

    t0 = time.perf_counter()
    res = explain_dataset(loaded.model, data, out, preprocess=loaded.preprocess, methods=METHODS, metrics=METRICS,
                          metric_options={"deletion": {"step": args.step}, "insertion": {"step": args.step}},
                          layer=loaded.cam_layer, workers=args.workers, model_name="efficientnet_lite0",
                          progress=False, class_names=loaded.class_names, on_batch=on_batch)
    wall = time.perf_counter() - t0
    stats = json.loads((out / "shards" / "stats-r000.json").read_text())
    floor_per_image = floor.seconds / (floor.batches * len(x))
    print(json.dumps({"images": n, "clock": args.clock, "seconds": ours["seconds"], "wall_seconds": wall,
                      "images_per_second": n / ours["seconds"], "peak_rss_mb": stats["peak_rss_mb"],
                      "floor_seconds": floor.seconds, "floor_images_per_second": 1.0 / floor_per_image,
                      "forward_rows_per_image": floor.calls,
                      "throughput_vs_floor": floor.seconds / ours["seconds"] * n / (floor.batches * len(x)),
                      "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "peak_rss_mb_after_batch": {k: rss_trace[k - 1] for k in sorted({1, 2, 4, 8, 16, 32, 64, 128})
                                                  if k <= len(rss_trace)} | {len(rss_trace): rss_trace[-1]},
                      "floor_batches": floor.batches, "threads": torch.get_num_threads(), "done": res.done_now}))


def torchrun(args: argparse.Namespace, n: int) -> dict:
    """The same run under torchrun with 2 processes (1 thread each), through the CLI."""
    work = Path(args.work)
    write_list(work, n)
    out = work / f"out_torchrun_{n}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                    "127.0.0.1", "--master-port", str(port), "-m", "interpretorch.cli", "evaluate", "--model",
                    "efficientnet_lite0", "--data", str(work / f"list_{n}.txt"), "--methods", ",".join(METHODS),
                    "--metrics", ",".join(METRICS), "--option", f"deletion.step={args.step}", "--option",
                    f"insertion.step={args.step}", "--workers", str(args.workers), "--out", str(out)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    ranks = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("stats-r*.json"))]
    loop = max(r["seconds"] for r in ranks)
    return {"images": n, "processes": 2, "loop_wall_seconds": loop, "wall_seconds": wall,
            "images_per_second_wall": n / loop, "cpu_seconds_per_rank": [r["cpu_seconds"] for r in ranks],
            "images_per_cpu_second": n / sum(r["cpu_seconds"] for r in ranks),
            "peak_rss_mb_per_rank": [r["peak_rss_mb"] for r in ranks]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64,256,1024", help="dataset sizes, comma-separated")
    p.add_argument("--torchrun", default="", help="sizes to run under torchrun --nproc-per-node 2 as well")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--step", type=float, default=0.01,
                   help="deletion / insertion step as a fraction of the pixels (default 0.01: 100 steps)")
    p.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                   help="seconds of the one-process runs and their floor: process CPU time (default; steadier on "
                        "a shared machine, with --threads 1 and --workers 0) or wall time")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the one-process runs (default 1)")
    p.add_argument("--floor-every", type=int, default=1,
                   help="time the floor after every K-th batch of ours (default 1: after every batch)")
    p.add_argument("--work", default=".bench/scale", help="folder for the images and results")
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one is not None:
        return one(args)
    work = Path(args.work)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    tr = [int(s) for s in args.torchrun.split(",") if s]
    make_images(work / "images", max(sizes + tr))
    results = []
    for n in sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--work", str(work), "--workers",
                               str(args.workers), "--step", str(args.step), "--clock", args.clock, "--threads",
                               str(args.threads), "--floor-every", str(args.floor_every)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        print(f"{n:5d} images: {r['images_per_second']:.3f} img/s ({args.clock}), floor {r['floor_images_per_second']:.3f} img/s "
              f"(ours / floor {r['throughput_vs_floor']:.3f}), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB in the loop, {r['process_peak_rss_mb']:.0f} MB with the summary; "
              f"after batch k: " + ", ".join(f"{k}: {v:.0f}" for k, v in r["peak_rss_mb_after_batch"].items()),
              flush=True)
    if len(results) > 1:
        for key in ("peak_rss_mb", "process_peak_rss_mb"):
            base = results[0][key]
            for r in results[1:]:
                print(f"{key} {r['images']} vs {results[0]['images']} images: {r[key] / base - 1:+.1%}")
    for n in tr:
        r = torchrun(args, n)
        results.append(r)
        print(f"{n:5d} images, torchrun 2 processes: {r['images_per_second_wall']:.3f} img/s wall, "
              f"{r['images_per_cpu_second']:.3f} img per CPU s (both ranks), "
              f"peak RSS per rank {', '.join(f'{v:.0f}' for v in r['peak_rss_mb_per_rank'])} MB", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
