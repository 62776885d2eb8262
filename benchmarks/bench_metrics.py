"""Evaluation-metrics benchmark: deletion AUC against the forward passes it needs, and Quantus's pixel flipping.

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

``--families`` instead times metrics of Quantus's families beside Quantus 0.6 on the same model, images and
maps, in one process (each pair interleaved, median of the repeats), and gives the ratio Quantus / interpretorch
and the largest difference of their values: region perturbation (patches of 28 px, 20 regions), selectivity
(56 px patches), faithfulness correlation (20 runs of 224 features: Quantus's features are channel values,
ours pixels, so the values differ and only the time compares) and sparseness (no model)::

    python benchmarks/bench_metrics.py --families --images 4 --repeats 1

``--rest`` times the metrics of issue 30 beside Quantus 0.6 the same way (sufficiency, consistency with Quantus's
discretisation, Focus, continuity, RIS / ROS / RRS, input invariance, efficient MPRT). The metrics that
re-explain get the same explanation function on both sides (the absolute gradient summed over channels, from
interpretorch), so the comparison is of the metric harness; RIS / ROS / RRS replay the same noise on both sides::

    python benchmarks/bench_metrics.py --rest --images 8 --repeats 1 --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import json
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


def families(args: argparse.Namespace) -> dict:
    """Metrics of Quantus's families beside Quantus 0.6: seconds of each, their ratio and the largest difference."""
    from interpretorch.metrics import faithfulness_correlation, region_perturbation, selectivity, sparseness

    if quantus is None:
        raise SystemExit(f"--families needs Quantus: {QUANTUS_ERROR}")
    lm = load_model("efficientnet_lite0")
    model = lm.model.eval()
    x = lm.preprocess(photos(args.images))
    maps = layer_cams(model, x, ["gradcam"], layer=lm.cam_layer)["gradcam"].maps
    with torch.no_grad():
        y = model(x).argmax(1).numpy()
    bs = args.batch_size
    common = {"model": model, "x_batch": x.numpy(), "y_batch": y, "a_batch": maps[:, None].numpy(), "device": "cpu",
              "channel_first": True, "batch_size": bs}
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
                                                               disable_warnings=True)(**common))),
        "sparseness": (lambda: sparseness(maps), lambda: np.asarray(quantus.Sparseness(disable_warnings=True)(
            **{**common, "model": None}))),
    }
    if args.only:
        keep = [k.strip().lower() for k in args.only.split(",")]
        pairs = {k: v for k, v in pairs.items() if any(k.lower().startswith(o) for o in keep)}
    # the forward rows each needs beyond the shared clean pass, through the model in batches of ``batch_size``
    floors = {"region perturbation (28 px, 20 regions)": (0, 20), "selectivity (56 px)": (0, 16),
              "faithfulness correlation (20 runs)": (0, 20)}
    return _time_pairs(args, pairs, x, "Quantus families, Grad-CAM maps", floors=floors, model=model)


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


def _floor(model: torch.nn.Module, x: torch.Tensor, explained: int, forward: int, bs: int) -> Callable[[], None]:
    """The floor of a metric: ``explained`` re-explanations (``_abs_gradient``) and ``forward`` plain forward rows
    per image, prepared in advance and run ``bs`` rows per call."""
    def run() -> None:
        if explained:
            xe = x.repeat_interleave(explained, 0)
            ye = torch.zeros(xe.shape[0], dtype=torch.long)
            for i in range(0, xe.shape[0], bs):
                _abs_gradient(model, xe[i:i + bs], ye[i:i + bs])
        if forward:
            xf = x.repeat_interleave(forward, 0)
            with torch.no_grad():
                for i in range(0, xf.shape[0], bs):
                    model(xf[i:i + bs])
    return run


def _time_pairs(args: argparse.Namespace, pairs: dict, x: torch.Tensor, what: str,
                floors: dict[str, tuple[int, int]] | None = None, model: torch.nn.Module | None = None) -> dict:
    rows = []
    floors = floors or {}
    for name, (ours_fn, theirs_fn) in pairs.items():
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
        ours_t, theirs_t, floor_t = [], [], []
        for r in range(args.repeats):
            for who in (("ours", "theirs", "floor") if r % 2 == 0 else ("floor", "theirs", "ours")):
                if who == "ours":
                    ours_t.append(timed(ours_fn, args.clock))
                elif who == "theirs":
                    theirs_t.append(timed(theirs_fn, args.clock))
                elif floor_fn is not None:
                    floor_t.append(timed(floor_fn, args.clock))
        ours_v = np.asarray(ours_fn().detach().double().numpy())
        both = np.isfinite(ours_v) & np.isfinite(theirs_v) if ours_v.shape == theirs_v.shape else None
        rel = np.abs(ours_v - theirs_v) / np.maximum(np.abs(theirs_v), 1e-12) if both is not None else None
        diff = float(rel[both].max()) if both is not None and both.any() else None
        rows.append({"metric": name, "interpretorch_s": statistics.median(ours_t),
                     "quantus_s": statistics.median(theirs_t), "max_abs_diff": diff,  # relative to Quantus's
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
        f = r.get("floor_s")
        fl = f"{f:.3f} {tuple(r['floor_rows'])}" if f else "-"
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
