"""Issue 29's methods beside their references on the same inputs, in one process: seconds for ours at batch_size
8 (rows per model call) and for Captum 0.9 or Zennit (LRP), and the ratio reference / ours (> 1: ours faster).
Captum gets the same 8 rows per call where it lets the caller choose: feature ablation and Shapley sampling run
with perturbations_per_eval=1 on the 8 images (one perturbation of every image per call), Lime and KernelShap with
perturbations_per_eval=8 (they explain a batch one image at a time: 8 perturbations of that image per call; with 1
they would run one row per call, which ``lime@1`` / ``kernel_shap@1`` time against ours at batch_size 1), path
methods with internal_batch_size=8; DeepLift / DeepLiftShap put images and references through together (16 rows
per call for 8 images) and GradientShap all its samples at once; ``name@N`` rows repeat those two with ours given
the same N rows per call. One untimed call of each side runs first.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_toolbox.py --images 2 --size 96
    # LRP beside Zennit needs Zennit importable (the vision environment, or --no-deps into a target directory):
    PYTHONPATH=src:/tmp/zennit_t python benchmarks/bench_toolbox.py --methods lrp

Sampled methods use the same numbers of samples on both sides (the draws differ; the cost does not depend on
them). Each figure is the best of ``--repeat`` runs, ours and the reference's interleaved. ``--clock cpu`` times
process CPU time (steadier with ``--threads 1`` on a busy machine).

Floors (``--floor``): the forward rows a method cannot avoid (the clean images plus its perturbed or path rows),
timed as plain forward passes of 8 rows (1 for ``@1``) without gradients, on the model as given in NCHW (what
Captum runs) and on the BatchNorm-folded copy in channels-last (what ours runs; for the no-gradient methods
``forward_only_model``'s copy); ``calls`` / ``refcalls`` count each side's model calls; ``ours/fl`` and
``ref/fl`` are each side's time over its floor. ``feature_ablation_slic`` uses SLIC superpixels per image (the
method's default): Captum then evaluates every label for every image (B x max F rows), ours each image's own (sum
of F). ``--absorption`` prints the LRP epsilon rule's conservation (relevance reaching the input / target logit) on
the model's biases.
"""
from __future__ import annotations

import argparse
import copy
import os
import time
import warnings

import torch
import torch.nn.functional as F


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = time.perf_counter


def timed(fn, repeat: int) -> float:
    """Best time of ``repeat`` calls of ``fn`` on the chosen clock."""
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


# the methods whose rows run without gradients, on forward_only_model's copy
FORWARD_ONLY = ("shapley_sampling", "feature_ablation", "feature_ablation_slic", "kernel_shap", "lime")


def floor_fn(model, x, n_rows: int, *, fold: bool, forward_only: bool = False, per_call: int = 8):
    """n_rows forward rows (the images repeated), ``per_call`` per call, without gradients: on the model as given
    (NCHW) or on the copy ours evaluates (BatchNorm folded, channels-last; with ``forward_only`` the copy the
    no-gradient rows run on)."""
    from interpretorch.attribution.folded import folded_model, forward_only_model
    from interpretorch.attribution.layout import in_layout, row_layout

    m = (forward_only_model if forward_only else folded_model)(model, x) if fold else model
    rows = x.repeat(-(-per_call // len(x)), 1, 1, 1)[:per_call]
    if fold:
        rows = in_layout(rows, row_layout(m, x))

    def run():
        with torch.no_grad():
            for start in range(0, n_rows, per_call):
                m(rows[:min(per_call, n_rows - start)])
    return run


def cases(model, x, t, layer_name, steps: int, samples: int, cell: int):
    """(name, ours, reference or None, reference's name, forward rows ours cannot avoid or None, Captum's forward
    rows) for every method."""
    import captum.attr as ca

    from interpretorch.attribution import explain
    from interpretorch.attribution.features import grid_masks, slic_masks
    from interpretorch.models.layers import get_layer

    layer = get_layer(model, layer_name)
    fm = grid_masks(x, cell)
    slic = slic_masks(x, n_segments=16)  # per image; a different number of superpixels each
    zeros = torch.zeros_like(x)
    dist = torch.randn((4,) + tuple(x.shape[1:]), generator=torch.Generator().manual_seed(0))

    def ours(name, rows=8, **opts):
        lay = {"layer": layer_name} if name in ("layer_conductance", "internal_influence", "neuron_conductance") \
            else {}
        return lambda: explain(model, x, name, target=t, batch_size=rows, options={name: opts} if opts else None,
                               **lay)

    yield "deeplift", ours("deeplift"), lambda: ca.DeepLift(model).attribute(x, zeros, target=t), "Captum"
    yield ("deeplift_shap", ours("deeplift_shap", baselines=dist),
           lambda: ca.DeepLiftShap(model).attribute(x, dist, target=t), "Captum")
    yield ("gradient_shap", ours("gradient_shap", baselines=dist, n_samples=samples),
           lambda: ca.GradientShap(model).attribute(x, dist, target=t, n_samples=samples), "Captum")
    # Captum's DeepLiftShap and GradientShap take no batch size: all rows go through at once. The same methods
    # with ours given as many rows per call:
    yield (f"deeplift_shap@{len(x) * len(dist)}", ours("deeplift_shap", rows=len(x) * len(dist), baselines=dist),
           lambda: ca.DeepLiftShap(model).attribute(x, dist, target=t), "Captum")
    yield (f"gradient_shap@{len(x) * samples}",
           ours("gradient_shap", rows=len(x) * samples, baselines=dist, n_samples=samples),
           lambda: ca.GradientShap(model).attribute(x, dist, target=t, n_samples=samples), "Captum")
    yield ("shapley_sampling", ours("shapley_sampling", features=fm, n_samples=2),
           lambda: ca.ShapleyValueSampling(model).attribute(x, target=t, feature_mask=fm, n_samples=2,
                                                            perturbations_per_eval=1), "Captum")
    yield ("feature_ablation", ours("feature_ablation", features=fm),
           lambda: ca.FeatureAblation(model).attribute(x, target=t, feature_mask=fm, perturbations_per_eval=1),
           "Captum")
    yield ("feature_ablation_slic", ours("feature_ablation", features=slic),
           lambda: ca.FeatureAblation(model).attribute(x, target=t, feature_mask=slic, perturbations_per_eval=1),
           "Captum")
    for rows in (8, 1):  # Captum's Lime / KernelShap explain one image at a time: rows per call = perturbations
        tag = "" if rows == 8 else f"@{rows}"
        yield (f"kernel_shap{tag}", ours("kernel_shap", rows=rows, features=fm, n_samples=samples),
               lambda rows=rows: ca.KernelShap(model).attribute(x, target=t, feature_mask=fm, n_samples=samples,
                                                                perturbations_per_eval=rows), "Captum")
        yield (f"lime{tag}", ours("lime", rows=rows, features=fm, n_samples=samples),
               lambda rows=rows: ca.Lime(model).attribute(x, target=t, feature_mask=fm, n_samples=samples,
                                                          perturbations_per_eval=rows), "Captum")
    yield ("layer_conductance", ours("layer_conductance", steps=steps),
           lambda: ca.LayerConductance(model, layer).attribute(x, target=t, n_steps=steps, internal_batch_size=8),
           "Captum")
    yield ("internal_influence", ours("internal_influence", steps=steps),
           lambda: ca.InternalInfluence(model, layer).attribute(x, target=t, n_steps=steps, internal_batch_size=8),
           "Captum")
    yield ("neuron_conductance", ours("neuron_conductance", neuron=(0, 0, 0), steps=steps),
           lambda: ca.NeuronConductance(model, layer).attribute(x, (0, 0, 0), target=t, n_steps=steps,
                                                                method="gausslegendre", internal_batch_size=8),
           "Captum")
    try:
        from zennit.attribution import Gradient
        from zennit.canonizers import NamedMergeBatchNorm
        from zennit.composites import EpsilonPlus

        from interpretorch.attribution.lrp import merge_batchnorm

        pairs = [([a], b) for a, b in merge_batchnorm(copy.deepcopy(model), x[:1])]

        def zennit():
            m = copy.deepcopy(model)  # what ours does too: the user's model is never changed
            out = m(x)
            start = torch.zeros_like(out)
            start[range(len(x)), t] = 1
            with Gradient(model=m, composite=EpsilonPlus(canonizers=[NamedMergeBatchNorm(pairs)])) as attributor:
                attributor(x, start * out.detach())
        yield "lrp", ours("lrp"), zennit, "Zennit"
    except ImportError:
        yield "lrp", ours("lrp"), None, "Zennit (not importable here)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=16, help="path points of the conductance methods")
    p.add_argument("--samples", type=int, default=32, help="samples of GradientSHAP, KernelSHAP and LIME")
    p.add_argument("--cell", type=int, default=None, help="grid cell of the feature methods (default: size / 4)")
    p.add_argument("--layer", default=None, help="layer of the conductance methods (default: the CAM layer)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall clock, or process CPU time (steadier with one thread on a busy machine)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--floor", action="store_true", help="count each side's forward rows and time them as plain "
                   "forward passes (the floor), on the model as given and on the copy ours runs")
    p.add_argument("--absorption", action="store_true", help="print the LRP epsilon rule's conservation and stop")
    args = p.parse_args()
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from skimage import data

    from interpretorch.attribution.common import resolve_layer
    from interpretorch.models import load_model

    loaded = load_model(args.model)
    model = loaded.model.eval()
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    x = loaded.preprocess([photos[i % 4] for i in range(args.images)])
    x = F.interpolate(x, size=(args.size, args.size), mode="bilinear", align_corners=False)
    with torch.no_grad():
        t = model(x).argmax(1)
    layer = args.layer or resolve_layer(model, None, x)
    cell = args.cell or max(1, args.size // 4)
    print(f"{args.model}, {args.images} images at {args.size} px, batch_size 8, layer {layer}, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, load average {os.getloadavg()[0]:.1f}")
    if args.absorption:
        absorption(model, x, t)
        return
    from interpretorch.attribution.layout import row_layout

    row_layout(model, x)  # the layout check's one row, made now so that no row count includes it
    head = f"{'method':22s} {'ours s':>8s} {'ref s':>8s} {'ref/ours':>8s}"
    if args.floor:
        head += (f" {'rows':>6s} {'refrows':>7s} {'calls':>5s} {'refcalls':>8s} {'fl ours':>8s} {'fl ref':>8s} "
                 f"{'ours/fl':>7s} {'ref/fl':>7s}")
    print(head + "  reference")
    for name, ours, ref, ref_name in cases(model, x, t, layer, args.steps, args.samples, cell):
        if args.methods and name.split("@")[0] not in args.methods:
            continue
        ours()  # warm-up: allocations, first-call costs
        if ref is not None:
            ref()
        a = b = float("inf")
        for _ in range(args.repeat):  # interleaved, so that a change in the machine's load hits both sides
            a = min(a, timed(ours, 1))
            b = min(b, timed(ref, 1)) if ref is not None else float("nan")
        line = f"{name:22s} {a:8.2f} {b:8.2f} {b / a:8.2f}"
        if args.floor:
            (rows, calls), (ref_rows, ref_calls) = count_rows(model, ours), \
                count_rows(model, ref) if ref is not None else (0, 0)
            per_call = 1 if name.endswith("@1") else 8
            fa = timed(floor_fn(model, x, rows, fold=True, forward_only=name.split("@")[0] in FORWARD_ONLY,
                                per_call=per_call), args.repeat)
            fb = timed(floor_fn(model, x, ref_rows, fold=False, per_call=per_call), args.repeat) if ref_rows \
                else float("nan")
            line += (f" {rows:6d} {ref_rows:7d} {calls:5d} {ref_calls:8d} {fa:8.2f} {fb:8.2f} {a / fa:7.2f} "
                     f"{b / fb:7.2f}")
        print(line + f"  {ref_name}", flush=True)


def count_rows(model, fn) -> tuple[int, int]:
    """The rows ``fn`` feeds ``model`` and the calls they take (one more untimed call, with a counting hook; ours
    then evaluates the model as given)."""
    rows = []

    def first_tensor(a):
        if isinstance(a, torch.Tensor):
            return a
        for v in a if isinstance(a, (tuple, list)) else ():
            t = first_tensor(v)
            if t is not None:
                return t
        return None
    handle = model.register_forward_pre_hook(lambda mod, args: rows.append(first_tensor(args).shape[0]))
    try:
        fn()
    finally:
        handle.remove()
    return sum(rows), len(rows)


def absorption(model, x, t) -> None:
    """LRP's conservation (input relevance / target logit) with the epsilon rule on every layer, by epsilon."""
    from interpretorch.attribution.lrp import lrp

    print(f"{'LRP':28s} {'mean':>8s} {'min':>8s} {'max':>8s}  (relevance reaching the input / target logit)")
    for how in [dict(composite=None, rule="epsilon", epsilon=e) for e in (1e-6, 1e-3, 1e-2, 0.1, 1.0)] + \
            [dict(composite="epsilon_plus")]:
        c = lrp(model, x, t, batch_size=8, **how).extras["conservation"].double()
        label = how.get("composite") or f"epsilon {how['epsilon']:g}"
        print(f"{label:28s} {float(c.mean()):8.3f} {float(c.min()):8.3f} {float(c.max()):8.3f}")


if __name__ == "__main__":
    main()
