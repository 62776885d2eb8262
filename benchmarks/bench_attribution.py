"""Gradient and perturbation attributions: interpretorch against the floor and Captum.

EfficientNet-Lite0, a batch of photos at 224x224, CPU, one process. Each method explains the same
top-1 classes with the same settings in both libraries; each library works on its own copy of the
model. Runs are interleaved (the order rotates every round) after a warm-up, and each entry reports
the median of its repeats.

The floor is the least the method must compute: the forward and backward passes of its rows
(``rows`` images through the model with ``torch.autograd.grad`` to the input, parameters frozen), or
the forward passes alone for the perturbation methods.

    python benchmarks/bench_attribution.py [--batch 4] [--repeats 3] [--json out.json]

Note: EfficientNet-Lite0 uses ReLU6, which Captum's GuidedBackprop / GuidedGradCam do not hook, so
their results there are plain gradients; the timing is still the same amount of work.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from typing import Callable

import torch

from interpretorch.attribution import explain
from interpretorch.models import load_model

try:
    from captum.attr import (GuidedBackprop, GuidedGradCam, IntegratedGradients, NoiseTunnel, Occlusion,
                             Saliency)
except Exception as e:  # noqa: BLE001 - optional peer
    CAPTUM_ERROR = f"{type(e).__name__}: {e}"
else:
    CAPTUM_ERROR = ""

IG_STEPS, SG_SAMPLES, OCC = 32, 16, (32, 16)  # steps, noisy samples, (window, stride)
RISE_MASKS = 256
ROWS = 32  # rows per forward pass for every row-expanding method, in both libraries


def photos(pre, n: int) -> torch.Tensor:
    from skimage import data

    imgs = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    return pre([imgs[i % len(imgs)] for i in range(n)])


def floor(model, x: torch.Tensor, rows: int, grad: bool) -> Callable[[], object]:
    """Forward (and backward to the input) of ``rows`` copies of the batch, ROWS at a time."""
    tgt = model(x).argmax(1)
    reps = -(-rows // x.shape[0])
    big = x.repeat(reps, 1, 1, 1)[:rows]
    t_big = tgt.repeat(reps)[:rows]

    def run():
        for p in model.parameters():
            p.requires_grad_(False)
        for s in range(0, rows, ROWS):
            r = big[s:s + ROWS]
            if grad:
                r = r.clone().requires_grad_(True)
                out = model(r)
                torch.autograd.grad(out.gather(1, t_big[s:s + ROWS, None]).sum(), r)
            else:
                with torch.no_grad():
                    model(r)
    return run


def cases(model, x):
    """name -> (rows for the floor, needs grad, ours, captum or None)."""
    b = x.shape[0]
    tgt = model(x).argmax(1)
    copies = {k: copy.deepcopy(model) for k in ("ours", "captum")}
    mo, mc = copies["ours"], copies["captum"]
    layer = "_head_act"
    occ_windows = (-(-(224 - OCC[0]) // OCC[1]) + 1) ** 2
    c = {}
    c["gradient"] = (b, True, lambda: explain(mo, x, "gradient", tgt),
                     None if CAPTUM_ERROR else lambda: Saliency(mc).attribute(x, target=tgt, abs=False))
    c["integrated_gradients"] = (
        b * IG_STEPS, True,
        lambda: explain(mo, x, "integrated_gradients", tgt, batch_size=ROWS, steps=IG_STEPS),
        None if CAPTUM_ERROR else lambda: IntegratedGradients(mc).attribute(
            x, target=tgt, n_steps=IG_STEPS, internal_batch_size=ROWS))
    c["smoothgrad"] = (
        b * SG_SAMPLES, True,
        lambda: explain(mo, x, "smoothgrad", tgt, batch_size=ROWS, n_samples=SG_SAMPLES),
        None if CAPTUM_ERROR else lambda: NoiseTunnel(Saliency(mc)).attribute(
            x, target=tgt, nt_samples=SG_SAMPLES, nt_samples_batch_size=max(1, ROWS // b), stdevs=0.6, abs=False))
    c["guided_backprop"] = (b, True, lambda: explain(mo, x, "guided_backprop", tgt),
                            None if CAPTUM_ERROR else lambda: GuidedBackprop(mc).attribute(x, target=tgt))
    c["guided_gradcam"] = (
        b, True, lambda: explain(mo, x, "guided_gradcam", tgt, layer=layer),
        None if CAPTUM_ERROR else lambda: GuidedGradCam(mc, mc._head_act).attribute(x, target=tgt))
    c["occlusion"] = (
        b * occ_windows, False,
        lambda: explain(mo, x, "occlusion", tgt, batch_size=ROWS, window=OCC[0], stride=OCC[1]),
        None if CAPTUM_ERROR else lambda: Occlusion(mc).attribute(
            x, target=tgt, sliding_window_shapes=(3, OCC[0], OCC[0]), strides=(3, OCC[1], OCC[1]),
            perturbations_per_eval=max(1, ROWS // b)))
    c["rise"] = (b * RISE_MASKS, False,
                 lambda: explain(mo, x, "rise", tgt, batch_size=ROWS, n_masks=RISE_MASKS), None)
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="method names to run")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    lm = load_model("efficientnet_lite0")
    model = lm.model
    x = photos(lm.preprocess, args.batch)
    fl = copy.deepcopy(model)
    all_cases = cases(model, x)
    names = args.only or list(all_cases)
    runs: dict[str, dict[str, Callable]] = {}
    for n in names:
        rows, grad, ours, theirs = all_cases[n]
        runs[n] = {"floor": floor(fl, x, rows, grad), "interpretorch": ours}
        if theirs is not None:
            runs[n]["captum"] = theirs
    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in r} for n, r in runs.items()}
    for n, r in runs.items():  # warm-up
        for fn in r.values():
            fn()
    for rep in range(args.repeats):
        for n, r in runs.items():
            keys = list(r)
            keys = keys[rep % len(keys):] + keys[:rep % len(keys)]
            for k in keys:
                t = time.perf_counter()
                r[k]()
                times[n][k].append(time.perf_counter() - t)
    result = {"batch": args.batch, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "methods": {}}
    print(f"EfficientNet-Lite0, {args.batch} images 224x224, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'method':22s} {'floor s':>8s} {'ours s':>8s} {'captum s':>9s} {'ours/floor':>11s} {'captum/ours':>12s}")
    for n, t in times.items():
        med = {k: statistics.median(v) for k, v in t.items()}
        cap = med.get("captum")
        result["methods"][n] = {**med, "ours_vs_floor": med["interpretorch"] / med["floor"],
                                "captum_vs_ours": None if cap is None else cap / med["interpretorch"]}
        ours = med["interpretorch"]
        cap_s = "n/a" if cap is None else f"{cap:.3f}"
        ratio = "n/a" if cap is None else f"{cap / ours:.2f}"
        print(f"{n:22s} {med['floor']:8.3f} {ours:8.3f} {cap_s:>9s} {ours / med['floor']:11.2f} {ratio:>12s}")
    if CAPTUM_ERROR:
        print(f"captum unavailable: {CAPTUM_ERROR}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
