"""Evaluation-metrics benchmark: deletion AUC against the forward passes it needs, and Quantus's metrics beside ours.

EfficientNet-Lite0, 8 photos at 224x224, CPU, one process, Grad-CAM maps computed once beforehand.

* floor: the forward passes deletion needs and nothing else - 8 images x 100 steps of 1 % of the
  pixels (the clean pass is shared with the other metrics and not counted), in batches of
  ``--batch-size`` (64), without gradients, on inputs prepared in advance. A second floor batches the way Quantus does:
  one forward call per step holding all 8 images (96 steps).
* interpretorch: ``deletion(model, x, maps, step=0.01)`` - ordering, building each perturbed input,
  batched scoring; reported as its time and as a ratio to the floor.
* Quantus: ``PixelFlipping`` with the same substrate (0 in input space), softmax scores, the same
  model and maps. Quantus flips features (channel values: 3 x 224 x 224) and needs
  ``features_in_step`` to divide 224 x 224, so exact 1 % pixel steps are impossible; its closest
  setting is 1568 values per step = 522 2/3 pixels (1.04 %), 96 steps. interpretorch is also run
  with 96 steps of 523 pixels for a like-for-like time, and the two curves are compared.

Runs are interleaved (the order rotates every round) after a warm-up, and each entry reports the
median of its repeats. Run in the development venv (Quantus installed)::

    python benchmarks/bench_metrics.py [--repeats 3] [--road] [--threads 1 --clock cpu] [--json out.json]

``--families`` instead times the perturbation metrics of Quantus's faithfulness family (and sparseness) beside
Quantus 0.6 on the same model, images and maps, in one process: each pair is run once untimed (warm-up and values),
then timed interleaved with the floor (the forward rows it cannot avoid per image, gathered from the images and run
``--batch-size`` rows per call without gradients, the clean pass not counted); the medians, the ratio Quantus /
interpretorch and the largest difference of their values relative to Quantus's. Each metric's defaults (baseline
"black", softmax or not) are Quantus's on both sides unless named:

* region perturbation (patches of 28 px, 20 regions), selectivity (56 px patches), faithfulness correlation (20
  runs of 224 features) and sparseness (no model), on the Grad-CAM maps. Faithfulness correlation draws channel
  values in Quantus and pixels in ours, so its values differ by design and only the time compares.
* pixel flipping and faithfulness estimate (steps of 8 x 224 = 1792 pixels: 28 steps), monotonicity (Arya; 28
  steps), monotonicity correlation (Nguyen; 3584-pixel steps: 14 steps x 3 samples of Quantus's "uniform" baseline,
  the draws of ``np.random.seed(11)`` replayed in its order), sensitivity-N (3584-pixel steps, the first 80 %: 11 of
  14 steps; Quantus computes all 14 and keeps 11) and IROF (scikit-image's SLIC segments of each image, the same call
  on both sides; baseline 0 on both, as Quantus's "mean" is that of the whole batch's current inputs). These get
  tie-free maps (``tie_free``: Grad-CAM scaled to a maximum of 1, equal values pulled apart by one float32 step), so
  both sides order pixels alike, and Quantus, which broadcasts a one-channel map over the 3 channels and orders the
  C x H x W values, keeps a pixel's three values together: its steps of 3 x 1792 values are our 1792 pixels. Quantus
  asks ``features_in_step`` to divide H x W, which no multiple of 3 does at 224 x 224; ``_without_step_check``
  drops that check and nothing else. Quantus's sensitivity-N counts the steps it keeps in pixels
  (``int(p * H * W // features_in_step)``) and so gets p = 2.4 for our 0.8; it correlates across the images of its
  first batch only, so it is given all images as one batch. Its monotonicity re-perturbs its own baseline image
  (every image scores True): it is given a perturbation that puts x's values back, as Arya et al. describe, and the
  column shows how many images' verdicts differ. Its IROF fails on RGB inputs (its (B, 1, H, W) masks meet an
  assertion that they have the inputs' shape): it is given the same perturbation with the mask broadcast first;
  and it pads each batch's curves with zeros, adding half the last point for an image with fewer segments than
  another of its batch, which the comparison adds back (the column says for how many images).

``--only`` takes comma-separated prefixes of the row names ("pixel", "monotonicity (", "monotonicity c",
"faithfulness e", "irof", "sensitivity", "region", ...). The run of issue 30 (32 images, one thread)::

    python benchmarks/bench_metrics.py --families --images 32 --repeats 1 --threads 1 --clock cpu --batch-size 8

``--rest`` times the metrics of issue 30 beside Quantus 0.6 the same way (sufficiency, consistency with Quantus's
discretisation, Focus, continuity, RIS / ROS / RRS, input invariance, efficient MPRT). The metrics that
re-explain get the same explanation function on both sides (the absolute gradient summed over channels, from
interpretorch), so the comparison is of the metric harness; RIS / ROS / RRS replay the same noise on both sides::

    python benchmarks/bench_metrics.py --rest --images 8 --repeats 1 --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable

import numpy as np
import torch

from interpretorch.attribution import layer_cams
from interpretorch.metrics import deletion, road
from interpretorch.models import load_model

try:
    warnings.filterwarnings("ignore")
    import quantus
except Exception as e:  # noqa: BLE001 - report, don't fail
    quantus, QUANTUS_ERROR = None, f"{type(e).__name__}: {e}"
else:
    QUANTUS_ERROR = ""

QUANTUS_FEATURES = 1568  # divides 224 * 224; 3 * 224 * 224 / 1568 = 96 steps


def photos(n: int = 8) -> list[np.ndarray]:
    """``n`` sample photos that ship with scikit-image."""
    from skimage import data

    names = ["chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "immunohistochemistry", "retina",
             "hubble_deep_field"]
    if not 1 <= n <= 4 * len(names):
        raise ValueError(f"--images must be 1..{4 * len(names)}")
    out = [getattr(data, name)() for name in names[:min(n, len(names))]]
    out = [img[0] if isinstance(img, tuple) else img for img in out]  # stereo_motorcycle: (left, right, disp)
    # beyond the 8 photos: their mirror images (left-right, upside down, both), so no two images are equal
    flips = [lambda a: a[:, ::-1], lambda a: a[::-1], lambda a: a[::-1, ::-1]]
    out += [np.ascontiguousarray(flips[(k // len(names)) - 1](out[k % len(names)])) for k in range(len(names), n)]
    return out


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def timed(fn: Callable[[], object], clock: str = "wall") -> float:
    """Seconds ``fn`` takes on the wall clock or in process CPU time."""
    now = CLOCKS[clock]
    start = now()
    fn()
    return now() - start


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall clock, or process CPU time (steadier with one thread on a busy machine)")
    ap.add_argument("--road", action="store_true", help="also time ROAD (9 percentages, MoRF + LeRF)")
    ap.add_argument("--skip-quantus", action="store_true")
    ap.add_argument("--skip-96", action="store_true", help="skip interpretorch's 96-step run")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--rest", action="store_true", help="time the metrics of issue 30 beside Quantus instead")
    ap.add_argument("--only", default=None, help="with --rest or --families: comma-separated name prefixes of the metrics to time")
    ap.add_argument("--families", action="store_true",
                    help="time metrics of Quantus's families beside Quantus instead (see the module's docstring)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.families:
        return families(args)
    if args.rest:
        return rest(args)

    lm = load_model("efficientnet_lite0")
    model = lm.model.eval()
    x = lm.preprocess(photos(args.images))
    b, c, h, w = x.shape
    cam = layer_cams(model, x, ["gradcam"], layer=lm.cam_layer)["gradcam"]
    maps = cam.maps
    bs = args.batch_size

    # The floor: the 100 perturbed inputs per image, prepared beforehand, through the model in batches.
    steps, q_steps = 100, 96

    def floor(xx: torch.Tensor, mm: torch.Tensor, n: int = steps) -> None:
        prepared = xx.repeat_interleave(n, 0)
        with torch.no_grad():
            for i in range(0, prepared.shape[0], bs):
                model(prepared[i:i + bs])

    def floor_per_step(xx: torch.Tensor, mm: torch.Tensor, n: int = q_steps) -> None:
        # Quantus's batching: one call per step holding every image.
        with torch.no_grad():
            for _ in range(n):
                model(xx)

    # name -> (function of (inputs, maps), forward passes it needs per image)
    runs: dict[str, tuple[Callable[[torch.Tensor, torch.Tensor], object], int]] = {
        "floor: the forward passes of 100 steps": (floor, steps),
        "floor: 96 steps, one batch of all images per step": (floor_per_step, q_steps),
        "interpretorch deletion, 1 % steps (100)": (
            lambda xx, mm: deletion(model, xx, mm, step=0.01, substrate="zeros", batch_size=bs), steps),
    }
    if not args.skip_96:
        runs["interpretorch deletion, 523 px steps (96)"] = (
            lambda xx, mm: deletion(model, xx, mm, step=523, substrate="zeros", batch_size=bs), q_steps)
    q_curves = {}
    if quantus is not None and not args.skip_quantus:
        metric = quantus.PixelFlipping(features_in_step=QUANTUS_FEATURES, perturb_baseline=0.0,
                                       disable_warnings=True, display_progressbar=False)

        def quantus_96(xx: torch.Tensor, mm: torch.Tensor) -> None:
            with torch.no_grad():
                yy = model(xx).argmax(1).numpy()
            q_curves["last"] = np.asarray(metric(model=model, x_batch=xx.numpy(), y_batch=yy,
                                                 a_batch=mm[:, None].numpy(), softmax=True, device="cpu",
                                                 channel_first=True, batch_size=bs))

        runs["Quantus PixelFlipping, 1568 values per step (96)"] = (quantus_96, q_steps)
    if args.road:
        runs["interpretorch ROAD, 9 percentages x MoRF + LeRF"] = (
            lambda xx, mm: road(model, xx, mm, batch_size=bs), 18)
        runs["floor: the forward passes of ROAD"] = (lambda xx, mm: floor(xx, mm, 18), 18)

    names = list(runs)
    for fn, _ in runs.values():  # warm-up on one image
        fn(x[:1], maps[:1])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            fn = runs[n][0]
            times[n].append(timed(lambda: fn(x, maps), args.clock))
    med = {n: statistics.median(t) for n, t in times.items()}

    per_pass = med[names[0]] / (b * steps)  # one image's forward pass, batches of --batch-size
    per_pass_step = med[names[1]] / (b * q_steps)  # one image's forward pass, one batch of the images per step
    rows = []
    for n in names:
        passes = b * runs[n][1]
        rows.append({"run": n, "seconds": med[n], "forward_passes": passes,
                     "ratio_to_its_forward_passes": med[n] / (passes * per_pass),
                     "ratio_to_per_step_batches": med[n] / (passes * per_pass_step)})

    # Agreement: our 96-step curve against Quantus's (which starts after the first step).
    agreement = None
    ours = deletion(model, x, maps, step=523, substrate="zeros", batch_size=bs)
    if "last" in q_curves:
        q_curves = q_curves["last"]
        ours_pts = ours.scores[:, 1:].numpy()
        # Not identical by construction: Quantus's steps are 522 2/3 pixels (a pixel's channels can be
        # split between steps), and the bilinear upsampling gives tied map values (about a quarter of
        # the pixels here) which we remove in raster order and NumPy's unstable argsort in its own.
        diff = np.abs(ours_pts - q_curves)
        agreement = {"max_abs_curve_difference": float(diff.max()),
                     "mean_abs_curve_difference": float(diff.mean()),
                     "auc_interpretorch": ours.auc.tolist(),
                     "auc_quantus_same_normalisation": np.trapezoid(
                         np.concatenate([ours.scores[:, :1].numpy(), q_curves], 1), dx=1 / 96, axis=1).tolist()}
    auc_1pct = deletion(model, x, maps, step=0.01, batch_size=bs).auc

    env = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "clock": args.clock, "load_average": os.getloadavg(),
           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "quantus": getattr(quantus, "__version__", QUANTUS_ERROR or "skipped")}
    print(f"Deletion, EfficientNet-Lite0, {b} images at {h}x{w}, Grad-CAM maps, batch {bs}, "
          f"median of {args.repeats}, {args.clock} clock (torch {env['torch']}, {env['threads']} threads, "
          f"Quantus {env['quantus']})\n")
    print(f"| run | seconds | forward passes | / those passes in batches of {bs} | / those passes, one batch per step |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['run']} | {r['seconds']:.2f} | {r['forward_passes']} | {r['ratio_to_its_forward_passes']:.2f} | "
              f"{r['ratio_to_per_step_batches']:.2f} |")
    print(f"\nmean deletion AUC (1 % steps): {float(auc_1pct.mean()):.4f}")
    if agreement:
        print(f"96-step curves, interpretorch vs Quantus: max |diff| {agreement['max_abs_curve_difference']:.4f}, "
              f"mean |diff| {agreement['mean_abs_curve_difference']:.5f}; mean AUC "
              f"{np.mean(agreement['auc_interpretorch']):.4f} vs {np.mean(agreement['auc_quantus_same_normalisation']):.4f}")
    out = {"env": env, "rows": rows, "agreement": agreement, "auc_1pct": auc_1pct.tolist()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


def tie_free(maps: torch.Tensor) -> torch.Tensor:
    """(B, H, W) float32 copies of non-negative maps scaled to a maximum of exactly 1 per image, every value of an
    image distinct: equal values (Grad-CAM's zeros, its upsampled plateaus) are pulled apart by single float32 steps
    downwards, in raster order, and values under 1e-30 are raised to it (so every value is a positive normal float)."""
    m = maps.detach().double()
    if m.dim() != 3 or (m < 0).any():
        raise ValueError("tie_free takes (B, H, W) non-negative maps")
    b = m.shape[0]
    m = (m / m.reshape(b, -1).amax(1).clamp(min=1e-300)[:, None, None]).float().clamp(min=1e-30)
    flat = m.reshape(b, -1).numpy()
    order = np.argsort(-flat, axis=1, kind="stable")  # descending, ties in raster order
    # the bit patterns of positive floats grow with their value: make them strictly fall along the order
    neg = -np.take_along_axis(flat, order, 1).view(np.int32).astype(np.int64)
    i = np.arange(flat.shape[1])
    neg = i + np.maximum.accumulate(neg - i, axis=1)
    out = np.empty_like(flat)
    np.put_along_axis(out, order, (-neg).astype(np.int32).view(np.float32), 1)
    if not (out.max(1) == 1.0).all() or (out <= 0).any() or any(len(np.unique(r)) != r.size for r in out):
        raise RuntimeError("could not make the maps tie-free")
    return torch.from_numpy(out).reshape(m.shape)


def _without_step_check(cls: type) -> type:
    """Quantus's metric ``cls`` without its check that ``features_in_step`` divides H x W (nothing else changes).

    Quantus's features are the C x H x W channel values of an image while the check counts the H x W pixels, so
    on RGB images no multiple of 3 passes it: whole-pixel steps of k pixels (3 k values) are refused although its
    loop computes them as any other step. Its ``custom_preprocess`` does only that check (Quantus 0.6)."""
    class Steps(cls):
        def custom_preprocess(self, *args, **kwargs) -> None:
            return None

    Steps.__name__ = Steps.__qualname__ = cls.__name__
    return Steps


def _uniform_replay(seed: int, n_images: int, bs: int, steps: int, samples: int) -> torch.Tensor:
    """(steps, samples, B) the values Quantus's MonotonicityCorrelation draws after ``np.random.seed(seed)``: for
    each batch of ``bs`` images, step by step and sample by sample, one ``np.random.uniform(size=images)``."""
    rng = np.random.RandomState(seed)
    out = np.empty((steps, samples, n_images))
    for s0 in range(0, n_images, bs):
        n = min(bs, n_images - s0)
        for k in range(steps):
            for j in range(samples):
                out[k, j, s0:s0 + n] = rng.uniform(size=n)
    return torch.from_numpy(out)


def families(args: argparse.Namespace) -> dict:
    """Metrics of Quantus's families beside Quantus 0.6: seconds of each, their ratio and the largest difference."""
    pairs, floors, model, x = family_pairs(args)
    return _time_pairs(args, pairs, x, "Quantus families, Grad-CAM maps", floors=floors, model=model)


def family_pairs(args: argparse.Namespace) -> tuple[dict, dict, torch.nn.Module, torch.Tensor]:
    """The pairs ``families`` times (name: ours, Quantus's[, comparison]), each one's floor rows, the model and x."""
    from interpretorch.metrics import (faithfulness_correlation, faithfulness_estimate, irof, monotonicity,
                                       monotonicity_correlation, pixel_flipping, region_perturbation, selectivity,
                                       sensitivity_n, sparseness)
    from interpretorch.metrics.perturbation import superpixels

    if quantus is None:
        raise SystemExit(f"--families needs Quantus: {QUANTUS_ERROR}")
    if not hasattr(np, "trapz"):
        np.trapz = np.trapezoid  # Quantus 0.6 calls np.trapz (IROF's area), gone in NumPy 2
    lm = load_model("efficientnet_lite0")
    model = lm.model.eval()
    x = lm.preprocess(photos(args.images))
    b, c, h, w = x.shape
    maps = layer_cams(model, x, ["gradcam"], layer=lm.cam_layer)["gradcam"].maps
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    bs = args.batch_size
    common = {"model": model, "x_batch": x.numpy(), "y_batch": y, "a_batch": maps[:, None].numpy(), "device": "cpu",
              "channel_first": True, "batch_size": bs}
    # The metrics that order single pixels get maps without ties on both sides (see the docstring): the same
    # float32 values, so our stable sort and Quantus's unstable argsort give one order, and Quantus's broadcast
    # map keeps a pixel's three channel values together.
    free = tie_free(maps)
    tf = {**common, "a_batch": free[:, None].numpy()}
    px, big = 8 * w, 16 * w  # pixels per step: 28 and 14 steps at 224 x 224
    n_px = h * w
    fl_steps, mc_steps, mc_samples = math.ceil(n_px / px), math.ceil(n_px / big), 3
    sn_keep = int(0.8 * n_px // big)
    # Quantus's sensitivity-N keeps int(p * H * W // features_in_step) steps, counting pixels, while its steps
    # hold c * big values: p = 0.8 c keeps the same steps as ours at 0.8.
    q_sn_pct = 0.8 * c

    mono_calls = {"n": 0}

    def put_back(arr, indices, **_kw):
        # Arya et al.'s monotonicity: put x's values back (Quantus 0.6's default re-perturbs its own baseline image,
        # so its inputs never change and every image scores True). Quantus calls this fl_steps times per batch.
        k = mono_calls["n"] // fl_steps * bs
        mono_calls["n"] += 1
        src = x.numpy().reshape(b, -1)[k:k + arr.shape[0]]
        out = arr.copy()
        rows = np.arange(arr.shape[0])[:, None]
        out[rows, indices] = src[rows, indices]
        return out

    def q_mono():
        mono_calls["n"] = 0
        return np.asarray(_without_step_check(quantus.Monotonicity)(
            features_in_step=c * px, perturb_func=put_back, disable_warnings=True)(**tf), dtype=float)

    mc_values = _uniform_replay(11, b, bs, mc_steps, mc_samples)

    def q_mc():
        np.random.seed(11)
        return np.asarray(_without_step_check(quantus.MonotonicityCorrelation)(
            features_in_step=c * big, nr_samples=mc_samples, disable_warnings=True)(**tf))

    def fraction_differing(ours: np.ndarray, theirs: np.ndarray) -> str:
        # a verdict rests on exact comparisons of consecutive scores: where one differs, show how near a tie it was
        differ = ours != theirs
        if not differ.any():
            return f"0/{ours.size} differ"
        curve = monotonicity(model, x, free, features_in_step=px, batch_size=bs, return_curve=True)
        closest = curve.diff(dim=1).abs().min(1).values.numpy()[differ].max()
        return f"{int(differ.sum())}/{ours.size} differ (smallest step change there: {closest:.1e})"

    # IROF: Quantus pads each batch's curves with zeros to its longest (the image with most segments), so an image
    # with fewer segments than another of its batch gains, in the area under its curve, half its last point: the
    # score of the image with every segment removed (all pixels 0 here) over its clean score. Added back, the
    # values must agree on every image.
    segs = {}

    def irof_compare(ours: np.ndarray, theirs: np.ndarray) -> str:
        counts = np.array([len(torch.unique(s)) for s in segs["s"]])
        padded = np.concatenate([counts[k:k + bs] < counts[k:k + bs].max() for k in range(0, b, bs)])
        with torch.no_grad():
            p_clean = torch.softmax(model(x), 1)[torch.arange(b), torch.as_tensor(y)]
            p_none = torch.softmax(model(torch.zeros_like(x)), 1)[torch.arange(b), torch.as_tensor(y)]
        fixed = theirs + np.where(padded, 0.5 * (p_none / p_clean).double().numpy(), 0.0)
        rel = np.abs(ours - fixed) / np.maximum(np.abs(fixed), 1e-12)
        return f"{rel.max():.1e} ({int(padded.sum())}/{b} padded by Quantus, added back)"

    def mask_to_channels(arr, mask, **kw):
        # Quantus 0.6's IROF builds (B, 1, H, W) masks and its default perturbation asserts they have the inputs'
        # (B, C, H, W) shape, so it fails on RGB images: the same perturbation given the mask broadcast first
        return quantus.baseline_replacement_by_mask(arr=arr, mask=np.broadcast_to(mask, arr.shape), **kw)

    pairs = {
        "region perturbation (28 px, 20 regions)": (
            lambda: region_perturbation(model, x, maps, patch_size=28, regions_evaluation=20, batch_size=bs),
            lambda: np.asarray(quantus.RegionPerturbation(patch_size=28, regions_evaluation=20, disable_warnings=True)(
                **common))),
        "selectivity (56 px)": (
            lambda: selectivity(model, x, maps, patch_size=56, batch_size=bs),
            lambda: np.stack(quantus.Selectivity(patch_size=56, disable_warnings=True)(**common))),
        "faithfulness correlation (20 runs)": (
            lambda: faithfulness_correlation(model, x, maps, nr_runs=20, subset_size=224, batch_size=bs),
            lambda: np.asarray(quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=224, return_aggregate=False,
                                                               disable_warnings=True)(**common)),
            lambda o, t: "by design (channel values vs pixels)"),
        "sparseness": (lambda: sparseness(maps), lambda: np.asarray(quantus.Sparseness(disable_warnings=True)(
            **{**common, "model": None}))),
        f"pixel flipping ({px} px steps, {fl_steps})": (
            lambda: pixel_flipping(model, x, free, features_in_step=px, batch_size=bs),
            lambda: np.asarray(_without_step_check(quantus.PixelFlipping)(features_in_step=c * px,
                                                                          disable_warnings=True)(**tf))),
        f"monotonicity ({px} px steps, {fl_steps})": (
            lambda: monotonicity(model, x, free, features_in_step=px, batch_size=bs), q_mono, fraction_differing),
        f"monotonicity correlation ({big} px steps, {mc_steps} x {mc_samples} samples)": (
            lambda: monotonicity_correlation(model, x, free, features_in_step=big, values=mc_values, batch_size=bs),
            q_mc),
        f"faithfulness estimate ({px} px steps, {fl_steps})": (
            lambda: faithfulness_estimate(model, x, free, features_in_step=px, batch_size=bs),
            lambda: np.asarray(_without_step_check(quantus.FaithfulnessEstimate)(features_in_step=c * px,
                                                                                 disable_warnings=True)(**tf))),
        "IROF (SLIC, baseline 0)": (
            lambda: irof(model, x, free, baseline=0.0, batch_size=bs),
            lambda: np.asarray(quantus.IROF(perturb_baseline=0.0, perturb_func=mask_to_channels,
                                            return_aggregate=False, disable_warnings=True)(**tf)),
            irof_compare),
        # Quantus 0.6's SensitivityN correlates across the images of its first batch only: one batch of all here
        f"sensitivity-N ({big} px steps, {sn_keep} of {mc_steps})": (
            lambda: sensitivity_n(model, x, free, features_in_step=big, n_max_percentage=0.8, batch_size=bs),
            lambda: np.asarray(_without_step_check(quantus.SensitivityN)(
                features_in_step=c * big, n_max_percentage=q_sn_pct, return_aggregate=False,
                disable_warnings=True)(**{**tf, "batch_size": b}))),
    }
    if args.only:
        keep = [k.strip().lower() for k in args.only.split(",")]
        pairs = {k: v for k, v in pairs.items() if any(k.lower().startswith(o) for o in keep)}
    # the forward rows each needs beyond the shared clean pass, through the model in batches of ``batch_size``
    floors = {"region perturbation (28 px, 20 regions)": (0, 20), "selectivity (56 px)": (0, 16),
              "faithfulness correlation (20 runs)": (0, 20),
              f"pixel flipping ({px} px steps, {fl_steps})": (0, fl_steps),
              f"monotonicity ({px} px steps, {fl_steps})": (0, fl_steps),
              f"monotonicity correlation ({big} px steps, {mc_steps} x {mc_samples} samples)": (
                  0, mc_steps * mc_samples),
              f"faithfulness estimate ({px} px steps, {fl_steps})": (0, fl_steps),
              f"sensitivity-N ({big} px steps, {sn_keep} of {mc_steps})": (0, sn_keep)}
    if "IROF (SLIC, baseline 0)" in pairs:  # one row per segment of each image (its own count)
        segs["s"] = superpixels(x)
        floors["IROF (SLIC, baseline 0)"] = (0, [len(torch.unique(s)) for s in segs["s"]])
    return pairs, floors, model, x


def _abs_gradient(model, inputs, targets, **_kw) -> torch.Tensor:
    """|d target logit / d x| summed over channels, (B, 1, H, W): the explanation both sides re-run."""
    x = torch.as_tensor(inputs, dtype=torch.float32).clone().requires_grad_(True)
    out = model(x).gather(1, torch.as_tensor(targets).long().reshape(-1, 1)).sum()
    (g,) = torch.autograd.grad(out, x)
    return g.abs().sum(1, keepdim=True)


def rest(args: argparse.Namespace) -> dict:
    """The metrics of issue 30 beside Quantus 0.6: seconds of each, their ratio and the largest difference."""
    from interpretorch.metrics import (consistency, continuity, efficient_mprt, focus, input_invariance,
                                       relative_input_stability, relative_output_stability,
                                       relative_representation_stability, sufficiency)

    if quantus is None:
        raise SystemExit(f"--rest needs Quantus: {QUANTUS_ERROR}")
    lm = load_model("efficientnet_lite0")
    model = lm.model.eval()
    x = lm.preprocess(photos(args.images))
    with torch.no_grad():
        outputs = model(x)
    y = outputs.argmax(1)
    a = _abs_gradient(model, x, y)
    bs = args.batch_size
    # ``evaluate`` shares one clean pass among all metrics: ours get it (``clean``), as they do there.
    q_explain = lambda model, inputs, targets, **kw: _abs_gradient(model, inputs, targets).numpy()  # noqa: E731
    common = {"model": model, "x_batch": x.numpy(), "y_batch": y.numpy(), "a_batch": a.numpy(), "device": "cpu",
              "channel_first": True, "batch_size": bs}
    quadrants = torch.rand(x.shape[0], 4, generator=torch.Generator().manual_seed(0)) < 0.5

    def predictions() -> torch.Tensor:
        return outputs

    def replay(seed: int, fn: Callable[..., torch.Tensor], **kw) -> torch.Tensor:
        # Quantus's draws in its order: for each batch of ``bs`` images, one (bs, features) draw per copy
        np.random.seed(seed)
        n_feat = x[0].numel()
        draws = [[np.random.uniform(low=0.02, high=0.2, size=(min(bs, x.shape[0] - s), n_feat)) for _ in range(4)]
                 for s in range(0, x.shape[0], bs)]
        copy = iter(range(4))

        def perturb(xx, gen):
            k = next(copy)
            n = np.concatenate([batch[k] for batch in draws])
            return xx + torch.from_numpy(n).reshape(xx.shape).to(xx.dtype)
        return fn(model, x, a, y, explain_fn=_abs_gradient, n_samples=4, perturb=perturb,
                  nan_when_prediction_changes=False, batch_size=bs, clean=outputs, **kw)

    def q_replay(seed: int, cls, **kw) -> np.ndarray:
        np.random.seed(seed)
        return np.asarray(cls(nr_samples=4, return_nan_when_prediction_changes=False, disable_warnings=True, **kw)(
            **common, explain_func=q_explain, softmax=False))

    pairs = {
        # Quantus computes these two within each batch of ``batch_size`` images: all images in one batch here
        "sufficiency": (lambda: sufficiency(a, predictions()),
                        lambda: np.asarray(quantus.Sufficiency(disable_warnings=True)(
                            **{**common, "batch_size": x.shape[0]}))),
        "consistency (first 5 signs)": (
            lambda: consistency(a, predictions(), discretise="first_n_sign", n=5),
            lambda: np.asarray(quantus.Consistency(disable_warnings=True)(**{**common, "batch_size": x.shape[0]}))),
        "focus": (lambda: focus(a, quadrants=quadrants),
                  lambda: np.asarray(quantus.Focus(disable_warnings=True)(
                      **common, custom_batch=quadrants.numpy().astype(int)))),
        "continuity (4 steps)": (
            lambda: continuity(model, x, a, y, explain_fn=_abs_gradient, nr_steps=4, batch_size=bs, clean=outputs),
            lambda: np.asarray(quantus.Continuity(nr_steps=4, disable_warnings=True)(**common,
                                                                                     explain_func=q_explain))),
        "RIS (4 samples)": (lambda: replay(1, relative_input_stability),
                            lambda: q_replay(1, quantus.RelativeInputStability)),
        "ROS (4 samples)": (lambda: replay(2, relative_output_stability),
                            lambda: q_replay(2, quantus.RelativeOutputStability)),
        "RRS (4 samples, _blocks.15)": (
            lambda: replay(3, relative_representation_stability, layers=["_blocks.15"]),
            lambda: q_replay(3, quantus.RelativeRepresentationStability, layer_names=["_blocks.15"])),
        "input invariance": (
            lambda: input_invariance(model, x, a, y, explain_fn=_abs_gradient, batch_size=bs, clean=outputs),
            lambda: np.asarray(quantus.InputInvariance(disable_warnings=True)(**common, explain_func=q_explain),
                               dtype=float)),
        "efficient MPRT": (
            lambda: efficient_mprt(model, x, a, y, explain_fn=_abs_gradient, batch_size=bs, clean=outputs),
            lambda: np.asarray(quantus.EfficientMPRT(disable_warnings=True)(**common, explain_func=q_explain))),
    }
    if args.only:
        keep = [k.strip().lower() for k in args.only.split(",")]
        pairs = {k: v for k, v in pairs.items() if any(k.lower().startswith(o) for o in keep)}
    # (explanation rows, forward rows) per image each metric cannot avoid, at ``batch_size`` rows per call: the
    # re-explained copies, and the outputs / representations of the copies (ROS, RRS) and the clean one (RRS)
    floors = {"continuity (4 steps)": (4, 0), "RIS (4 samples)": (4, 0), "ROS (4 samples)": (4, 4),
              "RRS (4 samples, _blocks.15)": (4, 5), "input invariance": (1, 0), "efficient MPRT": (1, 0)}
    return _time_pairs(args, pairs, x, "issue 30 metrics, |gradient| maps", floors=floors, model=model)


def _floor(model: torch.nn.Module, x: torch.Tensor, explained: int, forward: int | list[int],
           bs: int) -> Callable[[], None]:
    """The floor of a metric: ``explained`` re-explanations (``_abs_gradient``) and ``forward`` plain forward rows
    per image (one count for all, or one per image), gathered from the images ``bs`` rows per call."""
    def rows(n: int | list[int]) -> torch.Tensor:
        return torch.arange(x.shape[0]).repeat_interleave(torch.as_tensor(n) if isinstance(n, list) else n)

    def run() -> None:
        if explained:
            idx = rows(explained)
            ye = torch.zeros(bs, dtype=torch.long)
            for i in range(0, idx.numel(), bs):
                _abs_gradient(model, x[idx[i:i + bs]], ye[:len(idx[i:i + bs])])
        if forward:
            idx = rows(forward)
            with torch.no_grad():
                for i in range(0, idx.numel(), bs):
                    model(x[idx[i:i + bs]])
    return run


def _rows_text(rows: tuple) -> str:
    """(explained, forward) rows per image as printed: a per-image list of counts shows its mean."""
    return "(" + ", ".join(f"{statistics.mean(r):.1f} mean" if isinstance(r, list) else str(r) for r in rows) + ")"


def _time_pairs(args: argparse.Namespace, pairs: dict, x: torch.Tensor, what: str,
                floors: dict[str, tuple[int, int]] | None = None, model: torch.nn.Module | None = None) -> dict:
    rows = []
    floors = floors or {}
    for name, (ours_fn, theirs_fn, *compare) in pairs.items():
        floor_fn = _floor(model, x, *floors[name], args.batch_size) if name in floors else None
        try:
            theirs_v = np.asarray(theirs_fn(), dtype=np.float64)  # also the warm-up
        except Exception as e:  # noqa: BLE001 - a peer's failure is a result
            print(json.dumps({"metric": name, "quantus_error": f"{type(e).__name__}: {e}"}), flush=True)
            ours_t = [timed(ours_fn, args.clock) for _ in range(args.repeats)]
            floor_t = [timed(floor_fn, args.clock) for _ in range(args.repeats)] if floor_fn else []
            rows.append({"metric": name, "interpretorch_s": statistics.median(ours_t), "quantus_s": None,
                         "max_abs_diff": None, "quantus_error": f"{type(e).__name__}: {e}",
                         "floor_s": statistics.median(floor_t) if floor_t else None, "floor_rows": floors.get(name)})
            continue
        # also our warm-up: the first call on a model folds and traces it (``Scorer``), once per process
        ours_v = np.asarray(ours_fn().detach().double().numpy())
        ours_t, theirs_t, floor_t = [], [], []
        for r in range(args.repeats):
            for who in (("ours", "theirs", "floor") if r % 2 == 0 else ("floor", "theirs", "ours")):
                if who == "ours":
                    ours_t.append(timed(ours_fn, args.clock))
                elif who == "theirs":
                    theirs_t.append(timed(theirs_fn, args.clock))
                elif floor_fn is not None:
                    floor_t.append(timed(floor_fn, args.clock))
        both = np.isfinite(ours_v) & np.isfinite(theirs_v) if ours_v.shape == theirs_v.shape else None
        rel = np.abs(ours_v - theirs_v) / np.maximum(np.abs(theirs_v), 1e-12) if both is not None else None
        diff = float(rel[both].max()) if both is not None and both.any() else None
        absolute = float(np.abs(ours_v - theirs_v)[both].max()) if both is not None and both.any() else None
        # a pair's own comparison, where the values differ by design on some images or are not numbers to divide
        note = compare[0](ours_v, theirs_v) if compare and ours_v.shape == theirs_v.shape else None
        rows.append({"metric": name, "interpretorch_s": statistics.median(ours_t),
                     "quantus_s": statistics.median(theirs_t), "max_abs_diff": diff,  # relative to Quantus's
                     "max_absolute_diff": absolute, "diff_note": note,
                     "floor_s": statistics.median(floor_t) if floor_t else None,
                     "floor_rows": floors.get(name)})
        print(json.dumps(rows[-1]), flush=True)
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "clock": args.clock,
           "load_average": os.getloadavg(), "quantus": getattr(quantus, "__version__", "")}
    print(f"{what}, EfficientNet-Lite0, {x.shape[0]} images at {x.shape[-2]}x{x.shape[-1]}, batch "
          f"{args.batch_size}, median of {args.repeats}, {args.clock} clock, load average "
          f"{env['load_average'][0]:.1f}\n")
    print("| metric | interpretorch s | Quantus s | Quantus / interpretorch | floor s (explained, forward rows "
          "per image) | interpretorch / floor | Quantus / floor | max relative diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        d = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.1e}"
        d = r.get("diff_note") or d
        f = r.get("floor_s")
        fl = f"{f:.3f} {_rows_text(tuple(r['floor_rows']))}" if f else "-"
        of = f"{r['interpretorch_s'] / f:.2f}" if f else "-"
        if r["quantus_s"] is None:
            print(f"| {r['metric']} | {r['interpretorch_s']:.3f} | fails | - | {fl} | {of} | - | - |")
            continue
        qf = f"{r['quantus_s'] / f:.2f}" if f else "-"
        print(f"| {r['metric']} | {r['interpretorch_s']:.3f} | {r['quantus_s']:.3f} | "
              f"{r['quantus_s'] / max(r['interpretorch_s'], 1e-9):.1f} | {fl} | {of} | {qf} | {d} |")
    out = {"env": env, "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    sys.exit(main() and 0)
