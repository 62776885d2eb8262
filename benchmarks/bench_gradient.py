"""Gradient and perturbation attributions on EfficientNet-Lite0: interpretorch against its floor and Captum.

A batch of photos at 224 x 224 on the CPU (one process, torch's default thread count). Every method
explains the same top-1 classes with the same settings in both libraries, each library on its own copy of
the model, with the same number of rows per forward pass (``--rows``: interpretorch's ``batch_size``,
Captum's ``internal_batch_size`` / ``nt_samples_batch_size`` x images / ``perturbations_per_eval`` x images).

The floor is the least work the method needs, timed the same way: ``n`` x (forward + backward to the
input) for IG with n steps and SmoothGrad with n samples (the rows of all images ``--rows`` at a time,
parameters frozen, ``torch.autograd.grad`` to the input), and the forward passes alone for Occlusion
(one per window) and RISE (one per mask). Rounds are interleaved (the order rotates every round) after a
short warm-up; times are medians of ``--repeats`` rounds and ratios medians of the ratios within each round.

    python benchmarks/bench_gradient.py [--batch 8] [--repeats 3] [--rows 32] [--masks 250] [--json out.json]
                                        [--threads N] [--clock wall|cpu] [--only integrated smoothgrad ...]
                                        [--ig-delta]

Captum's GuidedBackprop hooks nn.ReLU modules only, so on this ReLU6 network it returns a plain gradient
(the timing is the same amount of work); interpretorch's applies the rule to the ReLU6 activations.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from typing import Callable

import torch

from interpretorch.attribution import explain
from interpretorch.models import load_model

try:
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Occlusion, Saliency
    import captum
except Exception as e:  # noqa: BLE001 - optional peer
    CAPTUM = f"unavailable ({type(e).__name__}: {e})"
else:
    CAPTUM = captum.__version__


def photos(pre, n: int) -> torch.Tensor:
    """``n`` sample photos (chelsea, coffee, astronaut, rocket, repeated) preprocessed for the model."""
    from skimage import data

    imgs = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return pre([imgs[i % len(imgs)] for i in range(n)])


def floor(model, x: torch.Tensor, tgt: torch.Tensor, per_image: int, rows: int, grad: bool) -> Callable[[], None]:
    """Forward (and backward to the input when ``grad``) of ``per_image`` copies of every image, ``rows`` at a time."""
    n = x.shape[0] * per_image
    idx = torch.arange(n) % x.shape[0]

    def run() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        for s in range(0, n, rows):
            i = idx[s:s + rows]
            r = x[i]
            if grad:
                r = r.clone().requires_grad_(True)
                out = model(r)
                torch.autograd.grad(out.gather(1, tgt[i, None]).sum(), r)
            else:
                with torch.no_grad():
                    model(r)
    return run


def _rows_whole(fn: Callable[[], object]) -> object:
    """``fn()`` with every perturbed row run whole (no ``IncrementalRows``): ours as before the engine."""
    from interpretorch.attribution import incremental

    with incremental.disabled():
        return fn()


def cases(model, x: torch.Tensor, args) -> dict[str, dict]:
    """name -> {per_image: passes each image needs, grad: floor with backward, ours, captum (or None)}."""
    b = x.shape[0]
    tgt = model(x).argmax(1)
    mo, mc = copy.deepcopy(model), copy.deepcopy(model)
    rows, steps, samples = args.rows, args.steps, args.samples
    win, stride = args.window, args.stride
    n_win = (-(-(224 - win) // stride) + 1) ** 2
    per = max(1, rows // b)  # Captum counts samples / windows per image, interpretorch counts rows
    has = not CAPTUM.startswith("unavailable")
    c: dict[str, dict] = {}
    c["gradient"] = dict(per_image=1, grad=True, ours=lambda: explain(mo, x, "gradient", tgt),
                         captum=has and (lambda: Saliency(mc).attribute(x, target=tgt, abs=False)))
    c["guided_backprop"] = dict(per_image=1, grad=True, ours=lambda: explain(mo, x, "guided_backprop", tgt),
                                captum=has and (lambda: GuidedBackprop(mc).attribute(x, target=tgt)))
    c[f"integrated_gradients ({steps} steps)"] = dict(
        per_image=steps, grad=True,
        ours=lambda: explain(mo, x, "integrated_gradients", tgt, batch_size=rows, steps=steps,
                             method="gausslegendre"),
        captum=has and (lambda: IntegratedGradients(mc).attribute(x, target=tgt, n_steps=steps,
                                                                  method="gausslegendre",
                                                                  internal_batch_size=rows,
                                                                  return_convergence_delta=args.ig_delta)))
    c[f"smoothgrad ({samples} samples)"] = dict(
        per_image=samples, grad=True,
        ours=lambda: explain(mo, x, "smoothgrad", tgt, batch_size=rows, n_samples=samples),
        captum=has and (lambda: NoiseTunnel(Saliency(mc)).attribute(
            x, nt_type="smoothgrad", target=tgt, nt_samples=samples, nt_samples_batch_size=per, stdevs=0.7,
            abs=False)))
    c[f"occlusion ({win}/{stride}, {n_win} windows)"] = dict(
        per_image=n_win, grad=False,
        ours=lambda: explain(mo, x, "occlusion", tgt, batch_size=rows, window=win, stride=stride),
        whole=lambda: _rows_whole(lambda: explain(mo, x, "occlusion", tgt, batch_size=rows, window=win,
                                                  stride=stride)),
        captum=has and (lambda: Occlusion(mc).attribute(x, target=tgt, sliding_window_shapes=(3, win, win),
                                                        strides=(3, stride, stride), perturbations_per_eval=per)))
    c[f"rise ({args.masks} masks)"] = dict(
        per_image=args.masks, grad=False,
        ours=lambda: explain(mo, x, "rise", tgt, batch_size=rows, n_masks=args.masks), captum=None)
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="images per call (default 8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=32, help="rows per forward pass in both libraries (default 32)")
    ap.add_argument("--steps", type=int, default=50, help="IG steps (default 50)")
    ap.add_argument("--samples", type=int, default=50, help="SmoothGrad samples (default 50)")
    ap.add_argument("--window", type=int, default=32, help="occlusion window (default 32)")
    ap.add_argument("--stride", type=int, default=16, help="occlusion stride (default 16)")
    ap.add_argument("--masks", type=int, default=250, help="RISE masks (default 250)")
    ap.add_argument("--ig-delta", action="store_true",
                    help="Captum's IG also returns its convergence delta, as ours always does (f(x), f(x') passes)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time (default) or process CPU time, steadier on a machine other jobs load")
    ap.add_argument("--only", nargs="*", help="run the methods whose name starts with these")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    torch.manual_seed(0)
    lm = load_model("efficientnet_lite0")
    model = lm.model.eval()
    x = photos(lm.preprocess, args.batch)
    tgt = model(x).argmax(1)
    fl = copy.deepcopy(model)
    all_cases = cases(model, x, args)
    names = [n for n in all_cases if not args.only or any(n.startswith(o) for o in args.only)]
    runs: dict[str, dict[str, Callable]] = {}
    for n in names:
        c = all_cases[n]
        runs[n] = {"floor": floor(fl, x, tgt, c["per_image"], args.rows, c["grad"]), "interpretorch": c["ours"]}
        if c["captum"]:
            runs[n]["captum"] = c["captum"]
        if c.get("whole"):
            runs[n]["interpretorch, rows whole"] = c["whole"]
    # warm-up: one forward + backward through each copy, so no round pays for first-call allocations
    for m in (fl,):
        floor(m, x[:2], tgt[:2], 1, args.rows, True)()
    explain(model, x[:2], "gradient", tgt[:2])
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in r} for n, r in runs.items()}
    for rep in range(args.repeats):
        for n, r in runs.items():
            keys = list(r)
            keys = keys[rep % len(keys):] + keys[:rep % len(keys)]
            for k in keys:
                t = clock()
                r[k]()
                times[n][k].append(clock() - t)
    result = {"batch": args.batch, "rows": args.rows, "captum_ig_delta": args.ig_delta,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "captum": CAPTUM, "machine": platform.machine(), "repeats": args.repeats, "clock": args.clock,
              "load_before": load_before, "load_after": os.getloadavg()[0],
              "total_s": time.perf_counter() - t_start, "methods": {}}
    print(f"EfficientNet-Lite0, {args.batch} images 224x224, CPU, {torch.get_num_threads()} threads, "
          f"{args.rows} rows per pass, {args.clock} clock, median of {args.repeats}; torch {torch.__version__}, "
          f"captum {CAPTUM}; 1-min load {load_before:.1f} before, {result['load_after']:.1f} after, "
          f"run {result['total_s']:.0f} s")
    print("| method | passes per image | floor s | interpretorch s | interpretorch / floor | images/s "
          "| Captum s | Captum / interpretorch |")
    print("|---|---|---|---|---|---|---|---|")
    for n, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        c = all_cases[n]
        ours, fl_s, cap = med["interpretorch"], med["floor"], med.get("captum")
        # Ratios are taken within each round (the entries of a round run back to back, so a load that comes
        # and goes on a shared machine hits them alike), then the median over rounds.
        vs_floor = statistics.median(o / f for o, f in zip(t["interpretorch"], t["floor"]))
        vs_captum = None if cap is None else statistics.median(k / o for k, o in zip(t["captum"], t["interpretorch"]))
        kind = "fwd+bwd" if c["grad"] else "fwd"
        result["methods"][n] = {"per_image": c["per_image"], "pass": kind, "floor_s": fl_s, "ours_s": ours,
                                "captum_s": cap, "ours_vs_floor": vs_floor, "images_per_s": args.batch / ours,
                                "captum_vs_ours": vs_captum, "all": t}
        cap_s = "n/a" if cap is None else f"{cap:.2f}"
        ratio = "n/a" if vs_captum is None else f"{vs_captum:.2f}"
        print(f"| {n} | {c['per_image']} {kind} | {fl_s:.2f} | {ours:.2f} | {vs_floor:.2f} | "
              f"{args.batch / ours:.2f} | {cap_s} | {ratio} |", flush=True)
    for n, t in times.items():
        if "interpretorch, rows whole" in t:
            w = statistics.median(t["interpretorch, rows whole"])
            gain = statistics.median(a / b for a, b in zip(t["interpretorch, rows whole"], t["interpretorch"]))
            result["methods"][n]["ours_rows_whole_s"] = w
            print(f"{n}: rows run whole (no IncrementalRows) {w:.2f} s, {gain:.2f}x the incremental rows' time")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
