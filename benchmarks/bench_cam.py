"""CAM family benchmark: interpretorch against the floor, pytorch-grad-cam and Captum.

EfficientNet-Lite0, a batch of 8 photos at 224x224, CPU, one process. Every method explains the same
top-1 classes at the same layer module; each library works on its own copy of the model (same
weights), so hooks or ``.grad`` left by one cannot slow another. Runs are interleaved (the order
rotates every round) after warm-up, and each entry reports the median of its repeats.

The floor is the least any gradient CAM must do: one forward pass and ``torch.autograd.grad`` of the
target scores to the layer activation, with parameters frozen.

Run it in the benchmark environment (see benchmarks/README.md, benchmarks/setup_bench_env.sh)::

    .bench-venv/bin/python benchmarks/bench_cam.py

pytorch-grad-cam needs torchvision; without it (or without Captum) their columns read "n/a".
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam draws a progress bar per image

import numpy as np
import torch
from torch import nn

from interpretorch.attribution import CAM_METHODS, ablation_cam, layer_cams, score_cam
from interpretorch.models import get_layer, load_model

try:  # optional peers
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except Exception as e:  # noqa: BLE001 - torchvision missing or broken: report, don't fail
    pgc, PGC_ERROR = None, f"{type(e).__name__}: {e}"
else:
    PGC_ERROR = ""
try:
    import captum
    from captum.attr import LayerAttribution, LayerGradCam
except Exception as e:  # noqa: BLE001
    captum, CAPTUM_ERROR = None, f"{type(e).__name__}: {e}"
else:
    CAPTUM_ERROR = ""

# interpretorch name -> pytorch-grad-cam class name
PGC_GRADIENT = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "xgradcam": "XGradCAM",
                "layercam": "LayerCAM", "hirescam": "HiResCAM", "eigencam": "EigenCAM"}
TARGETS = {"gradcam_vs_floor": 1.15, "all_vs_gradcam": 1.3, "scorecam_speedup": 1.5, "scorecam_r": 0.99}


# ----------------------------------------------------------------------------------------------- data
def sample_batch(preprocess, n: int) -> torch.Tensor:
    """n preprocessed photos: four scikit-image samples and their mirror images, repeated as needed."""
    from skimage import data

    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    photos += [np.ascontiguousarray(p[:, ::-1]) for p in photos]
    return preprocess([photos[i % len(photos)] for i in range(n)])


def pearson_per_image(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Pearson r between matching (H, W) maps of two (B, H, W) batches."""
    out = []
    for x, y in zip(a.detach().double(), b.detach().double()):
        x, y = x.flatten() - x.mean(), y.flatten() - y.mean()
        den = x.norm() * y.norm()
        out.append(float((x @ y) / den) if den > 0 else float("nan"))
    return out


def as_tensor(maps) -> torch.Tensor:
    return maps if isinstance(maps, torch.Tensor) else torch.from_numpy(np.asarray(maps))


# ------------------------------------------------------------------------------------------- runners
def floor_fn(model: nn.Module, layer: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One forward + autograd.grad of the target scores to the layer output (``model`` params frozen)."""
    box: dict[str, torch.Tensor] = {}

    def hook(_m, _i, out):
        box["a"] = out.detach().requires_grad_(True)
        return box["a"]

    h = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = model(x)
            score = out.gather(1, idx[:, None]).sum()
            (g,) = torch.autograd.grad(score, box["a"])
    finally:
        h.remove()
    return g


def pgc_run(cls_name: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, idx: list[int],
            batch_size: int | None = None) -> np.ndarray:
    """pytorch-grad-cam as documented: build the CAM object with a ``with`` block and call it."""
    cls = getattr(pgc, cls_name)
    kw = {"batch_size": batch_size} if cls_name == "AblationCAM" and batch_size else {}
    with cls(model=model, target_layers=[layer], **kw) as cam:
        if cls_name == "ScoreCAM" and batch_size:
            cam.batch_size = batch_size  # read by ScoreCAM.get_cam_weights (its default is 16)
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in idx])


def captum_gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """Captum LayerGradCam, ReLU'd and upsampled to the input size like the others."""
    attr = LayerGradCam(model, layer).attribute(x, target=idx, relu_attributions=True)
    return LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), "bilinear")[:, 0]


def bench(entries: dict[str, Callable[[], object]], repeats: int, warmup: int,
          log: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """Time every entry ``repeats`` times, interleaved in a rotating order, after ``warmup`` rounds.

    Returns {"wall": {entry: seconds...}, "cpu": {entry: process CPU seconds...}}.
    """
    names = list(entries)
    for w in range(warmup):
        for n in names:
            entries[n]()
        log(f"  warm-up round {w + 1}/{warmup} done")
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            timed(entries[n], n, times, cpu)
        log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{n}={times[n][-1]:.3f}s" for n in names))
    return {"wall": times, "cpu": cpu}


def timed(fn: Callable[[], object], name: str, wall: dict[str, list[float]], cpu: dict[str, list[float]]):
    """Run ``fn`` once, appending its wall-clock and process CPU seconds; return its result."""
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    res = fn()
    wall[name].append(time.perf_counter() - t0)
    cpu[name].append(time.process_time() - c0)
    return res


def med(ts: list[float] | None) -> float | None:
    return statistics.median(ts) if ts else None


# ------------------------------------------------------------------------------------------ sections
def gradient_section(models: dict[str, nn.Module], layer_name: str, x: torch.Tensor, idx: torch.Tensor,
                     args, log) -> dict:
    """Floor, every one-pass CAM alone, all seven together, and the peers' versions."""
    layers = {k: get_layer(m, layer_name) for k, m in models.items()}
    idx_list = idx.tolist()
    entries: dict[str, Callable[[], object]] = {
        "floor": lambda: floor_fn(models["floor"], layers["floor"], x, idx)}
    for m in CAM_METHODS:
        entries[f"ours:{m}"] = (lambda m=m: layer_cams(models["ours"], x, [m], idx, layer_name, normalize=True))
    entries["ours:all7"] = lambda: layer_cams(models["ours"], x, list(CAM_METHODS), idx, layer_name, normalize=True)
    if pgc is not None:
        for m, cls in PGC_GRADIENT.items():
            entries[f"pgc:{m}"] = (lambda cls=cls: pgc_run(cls, models["pgc"], layers["pgc"], x, idx_list))
    if captum is not None:
        entries["captum:gradcam"] = lambda: captum_gradcam(models["captum"], layers["captum"], x, idx_list)

    # agreement of the maps (not timed)
    ours = layer_cams(models["ours"], x, list(CAM_METHODS), idx, layer_name, normalize=True)
    agree: dict[str, list[float]] = {}
    if pgc is not None:
        for m, cls in PGC_GRADIENT.items():
            agree[f"pgc:{m}"] = pearson_per_image(ours[m].maps, as_tensor(pgc_run(cls, models["pgc"], layers["pgc"],
                                                                                   x, idx_list)))
    if captum is not None:
        agree["captum:gradcam"] = pearson_per_image(ours["gradcam"].maps,
                                                    captum_gradcam(models["captum"], layers["captum"], x, idx_list))
    log(f"gradient CAMs: {len(entries)} entries x {args.repeats} repeats (+{args.warmup} warm-up)")
    times = bench(entries, args.repeats, args.warmup, log)
    return {"times": times, "agree": agree}


def score_section(models: dict[str, nn.Module], layer_name: str, x: torch.Tensor, idx: torch.Tensor,
                  args, log) -> dict:
    """Score-CAM (channel-softmax weighting, as pytorch-grad-cam) and Ablation-CAM, ours and theirs."""
    layers = {k: get_layer(m, layer_name) for k, m in models.items()}
    idx_list = idx.tolist()
    bs = args.score_batch
    entries: dict[str, Callable[[], object]] = {
        "ours:scorecam": lambda: score_cam(models["ours"], x, idx, layer_name, batch_size=bs,
                                           weighting="channel_softmax", align_corners=True, normalize=True)}
    if pgc is not None:
        entries["pgc:scorecam"] = lambda: pgc_run("ScoreCAM", models["pgc"], layers["pgc"], x, idx_list, bs)
    entries["ours:ablationcam"] = lambda: ablation_cam(models["ours"], x, idx, layer_name, batch_size=bs,
                                                       normalize=True)
    if pgc is not None:
        entries["pgc:ablationcam"] = lambda: pgc_run("AblationCAM", models["pgc"], layers["pgc"], x, idx_list, bs)
    # warm-up: one forward at the masked-batch size on every copy (oneDNN picks its kernels per shape)
    with torch.no_grad():
        for m in models.values():
            m(x[:1].expand(bs, -1, -1, -1).contiguous())
    log(f"score CAMs at {layer_name!r}, {x.shape[0]} images, batch {bs}: "
        f"{len(entries)} entries x {args.score_repeats} repeats (first run of each also checks agreement)")
    times: dict[str, list[float]] = {n: [] for n in entries}
    cpu: dict[str, list[float]] = {n: [] for n in entries}
    results: dict[str, object] = {}
    names = list(entries)
    for r in range(args.score_repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            results.setdefault(n, timed(entries[n], n, times, cpu))
            log(f"  round {r + 1}/{args.score_repeats}: {n} {times[n][-1]:.1f}s wall, {cpu[n][-1]:.1f}s CPU")
    agree: dict[str, list[float]] = {}
    if pgc is not None:
        agree["pgc:scorecam"] = pearson_per_image(results["ours:scorecam"].maps, as_tensor(results["pgc:scorecam"]))
        agree["pgc:ablationcam"] = pearson_per_image(results["ours:ablationcam"].maps,
                                                     as_tensor(results["pgc:ablationcam"]))
    return {"times": {"wall": times, "cpu": cpu}, "agree": agree, "layer": layer_name, "images": int(x.shape[0]),
            "batch": bs}


# ------------------------------------------------------------------------------------------- report
def fmt(v: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def r_text(rs: list[float] | None) -> str:
    if not rs:
        return "n/a"
    return f"{min(rs):.4f}" if len(rs) == 1 else f"{min(rs):.4f} / {statistics.median(rs):.4f}"


def report(env: dict, grad: dict, score: dict | None, clock: str = "wall") -> tuple[str, dict]:
    """Markdown tables and the pass/miss verdict for each target."""
    t = {k: med(v) for k, v in grad["times"][clock].items()}
    floor = t["floor"]
    what = "wall-clock" if clock == "wall" else "process CPU"
    lines = [f"Seconds are medians of {what} time. Floor (forward + autograd.grad to `{env['layer']}`, "
             f"params frozen): **{floor:.3f} s** (median of {env['repeats']})", "",
             "| method | interpretorch s | x floor | pytorch-grad-cam s | x floor | Captum s | x floor "
             "| ours faster than pgc | r vs pgc (min / median) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in list(CAM_METHODS) + ["all7"]:
        ours, theirs, cap = t.get(f"ours:{m}"), t.get(f"pgc:{m}"), t.get(f"captum:{m}")
        label = "all seven together" if m == "all7" else m
        lines.append(f"| {label} | {fmt(ours)} | {fmt(ours and ours / floor, '.2f', 'x')} | {fmt(theirs)} | "
                     f"{fmt(theirs and theirs / floor, '.2f', 'x')} | {fmt(cap)} | "
                     f"{fmt(cap and cap / floor, '.2f', 'x')} | "
                     f"{fmt(theirs and ours and theirs / ours, '.2f', 'x')} | {r_text(grad['agree'].get(f'pgc:{m}'))} |")
    if "captum:gradcam" in grad["agree"]:
        lines += ["", f"Grad-CAM r vs Captum LayerGradCam (min / median): {r_text(grad['agree']['captum:gradcam'])}"]
    verdict = {}
    g = t["ours:gradcam"]
    verdict["gradcam_vs_floor"] = (g / floor, g / floor <= TARGETS["gradcam_vs_floor"])
    verdict["all_vs_gradcam"] = (t["ours:all7"] / g, t["ours:all7"] / g <= TARGETS["all_vs_gradcam"])
    if score:
        s = {k: med(v) for k, v in score["times"][clock].items()}
        lines += ["", f"Score methods at `{score['layer']}`, {score['images']} images, masked/ablated passes in "
                  f"batches of {score['batch']} for both libraries (median of {len(score['times'][clock]['ours:scorecam'])}; "
                  f"x floor: against the floor scaled to {score['images']} images):",
                  "", "| method | interpretorch s | x floor | pytorch-grad-cam s | x floor | ours faster than pgc "
                  "| r vs pgc (min / median) |", "|---|---|---|---|---|---|---|"]
        sfloor = floor * score["images"] / env["images"]  # the floor for as many images as the score methods
        for m in ("scorecam", "ablationcam"):
            ours, theirs = s.get(f"ours:{m}"), s.get(f"pgc:{m}")
            lines.append(f"| {m} | {fmt(ours, '.2f')} | {fmt(ours / sfloor, '.0f', 'x')} | {fmt(theirs, '.2f')} | "
                         f"{fmt(theirs and theirs / sfloor, '.0f', 'x')} | {fmt(theirs and theirs / ours, '.2f', 'x')} | "
                         f"{r_text(score['agree'].get(f'pgc:{m}'))} |")
        if s.get("pgc:scorecam"):
            sp = s["pgc:scorecam"] / s["ours:scorecam"]
            rmin = min(score["agree"]["pgc:scorecam"])
            verdict["scorecam_speedup"] = (sp, sp >= TARGETS["scorecam_speedup"])
            verdict["scorecam_r"] = (rmin, rmin >= TARGETS["scorecam_r"])
    names = {"gradcam_vs_floor": "Grad-CAM / floor <= 1.15", "all_vs_gradcam": "all seven / Grad-CAM alone <= 1.3",
             "scorecam_speedup": "pgc ScoreCAM / ours >= 1.5", "scorecam_r": "Score-CAM min Pearson r vs pgc >= 0.99"}
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for k, (v, ok) in verdict.items():
        lines.append(f"| {names[k]} | {v:.3f} | {'met' if ok else 'MISSED'} |")
    return "\n".join(lines), {k: {"value": v, "met": ok} for k, (v, ok) in verdict.items()}


def profile(model: nn.Module, x: torch.Tensor, idx: torch.Tensor, what: str, args) -> None:
    """Print where the time of one of our calls goes (torch.profiler operators and cProfile Python frames)."""
    import cProfile
    import pstats

    layer_name = args.layer
    if what in ("scorecam", "ablationcam"):
        layer_name, n, bs = args.score_layer or args.layer, args.score_images or x.shape[0], args.score_batch
        x, idx = x[:n], idx[:n]
    if what == "scorecam":
        fn = lambda: score_cam(model, x, idx, layer_name, batch_size=bs,  # noqa: E731
                               weighting="channel_softmax", align_corners=True, normalize=True)
    elif what == "ablationcam":
        fn = lambda: ablation_cam(model, x, idx, layer_name, batch_size=bs, normalize=True)  # noqa: E731
    else:
        methods = list(CAM_METHODS) if what == "all7" else [what]
        fn = lambda: layer_cams(model, x, methods, idx, layer_name, normalize=True)  # noqa: E731
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    pr = cProfile.Profile()
    pr.enable()
    fn()
    pr.disable()
    pstats.Stats(pr).sort_stats("cumulative").print_stats(20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--images", type=int, default=8, help="batch size of the gradient CAMs (default 8)")
    p.add_argument("--layer", default="_head_act", help="CAM layer (default _head_act, 1280x7x7)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds of the gradient CAMs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--score-layer", default=None, help="layer of Score-/Ablation-CAM (default: --layer; "
                   "_blocks.15 has 320 channels instead of 1280)")
    p.add_argument("--score-images", type=int, default=4,
                   help="images for the score methods: the first N of the batch (default 4, the four distinct "
                   "photos; the other four are their mirror images)")
    p.add_argument("--score-batch", type=int, default=16,
                   help="masked/ablated inputs per forward, for both libraries (default 16, pytorch-grad-cam's "
                   "ScoreCAM default; larger batches cost more per image on CPU)")
    p.add_argument("--score-repeats", type=int, default=1, help="timed runs of each score method (default 1)")
    p.add_argument("--skip-score", action="store_true", help="only the gradient CAMs")
    p.add_argument("--profile", metavar="METHOD", help="profile one of our calls (gradcam, all7, scorecam, ...) and exit")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time the tables show: wall-clock (default) or process CPU time, steadier on a shared "
                   "machine with --threads 1; both are kept in --json")
    p.add_argument("--json", metavar="PATH", help="also write the raw timings and correlations as JSON")
    p.add_argument("--from-json", metavar="PATH", help="print the tables of a saved --json run (with --clock) and exit")
    args = p.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        print(report(saved["env"], saved["gradient"], saved["score"], args.clock)[0])
        return 0

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731

    lm = load_model("efficientnet_lite0")
    base = lm.model.eval()
    x = sample_batch(lm.preprocess, args.images)
    with torch.no_grad():
        idx = base(x).argmax(1)
    if args.profile:
        profile(base, x, idx, args.profile, args)
        return 0

    models = {"ours": base}
    for k in ("floor", "pgc", "captum"):
        models[k] = copy.deepcopy(base).eval()
    for prm in models["floor"].parameters():
        prm.requires_grad_(False)

    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
           "cpu": _cpu_name(), "layer": args.layer, "images": args.images, "repeats": args.repeats,
           "pytorch-grad-cam": _version("grad-cam") if pgc else f"missing ({PGC_ERROR})",
           "captum": captum.__version__ if captum else f"missing ({CAPTUM_ERROR})",
           "load_before": os.getloadavg()[0], "targets": idx.tolist()}
    log(f"environment: {env}")
    if env["load_before"] > 0.5:
        log(f"warning: 1-minute load average is {env['load_before']:.1f}; other processes share the cores, "
            "so wall-clock times will be noisy")
    grad = gradient_section(models, args.layer, x, idx, args, log)
    score = None
    if not args.skip_score:
        n = args.score_images or args.images
        score = score_section(models, args.score_layer or args.layer, x[:n], idx[:n], args, log)
    env["load_after"] = os.getloadavg()[0]
    env["total_s"] = time.perf_counter() - t_start
    text, verdict = report(env, grad, score, args.clock)
    print(f"EfficientNet-Lite0, batch {args.images} at 224x224, CPU ({env['cpu']}), torch {env['torch']}, "
          f"{env['threads']} threads; pytorch-grad-cam {env['pytorch-grad-cam']}, Captum {env['captum']}; "
          f"1-min load average {env['load_before']:.1f} before, {env['load_after']:.1f} after; "
          f"whole run {env['total_s']:.0f} s\n")
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "gradient": grad, "score": score, "verdict": verdict}, f, indent=1)
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
