"""Issue 29's methods beside their references on the same inputs, in one process: seconds for ours at batch_size
8 (rows per model call) and for Captum 0.9 or Zennit (LRP), and the ratio reference / ours (> 1: ours faster).
Captum gets the same 8 rows per call where it lets the caller choose: perturbation methods run with
perturbations_per_eval=1 on the 8 images, path methods with internal_batch_size=8; DeepLift / DeepLiftShap put
images and references through together (16 rows per call for 8 images) and GradientShap all its samples at once.
One untimed call of each side runs first.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_toolbox.py --images 2 --size 96
    # LRP beside Zennit needs Zennit importable (the vision environment, or --no-deps into a target directory):
    PYTHONPATH=src:/tmp/zennit_t python benchmarks/bench_toolbox.py --methods lrp

Sampled methods use the same numbers of samples on both sides (the draws differ; the cost does not depend on
them). Each figure is the best of ``--repeat`` runs, ours and the reference's interleaved.
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
import torch.nn.functional as F


def timed(fn, repeat: int) -> float:
    """Best wall time of ``repeat`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cases(model, x, t, layer_name, steps: int, samples: int, cell: int):
    """(name, ours, reference or None, reference's name) for every method."""
    import captum.attr as ca

    from interpretorch.attribution import explain
    from interpretorch.attribution.features import grid_masks
    from interpretorch.models.layers import get_layer

    layer = get_layer(model, layer_name)
    fm = grid_masks(x, cell)
    zeros = torch.zeros_like(x)
    dist = torch.randn((4,) + tuple(x.shape[1:]), generator=torch.Generator().manual_seed(0))

    def ours(name, **opts):
        lay = {"layer": layer_name} if name in ("layer_conductance", "internal_influence", "neuron_conductance") \
            else {}
        return lambda: explain(model, x, name, target=t, batch_size=8, options={name: opts} if opts else None,
                               **lay)

    yield "deeplift", ours("deeplift"), lambda: ca.DeepLift(model).attribute(x, zeros, target=t), "Captum"
    yield ("deeplift_shap", ours("deeplift_shap", baselines=dist),
           lambda: ca.DeepLiftShap(model).attribute(x, dist, target=t), "Captum")
    yield ("gradient_shap", ours("gradient_shap", baselines=dist, n_samples=samples),
           lambda: ca.GradientShap(model).attribute(x, dist, target=t, n_samples=samples), "Captum")
    yield ("shapley_sampling", ours("shapley_sampling", features=fm, n_samples=2),
           lambda: ca.ShapleyValueSampling(model).attribute(x, target=t, feature_mask=fm, n_samples=2,
                                                            perturbations_per_eval=1), "Captum")
    yield ("feature_ablation", ours("feature_ablation", features=fm),
           lambda: ca.FeatureAblation(model).attribute(x, target=t, feature_mask=fm, perturbations_per_eval=1),
           "Captum")
    yield ("kernel_shap", ours("kernel_shap", features=fm, n_samples=samples),
           lambda: ca.KernelShap(model).attribute(x, target=t, feature_mask=fm, n_samples=samples,
                                                  perturbations_per_eval=1), "Captum")
    yield ("lime", ours("lime", features=fm, n_samples=samples),
           lambda: ca.Lime(model).attribute(x, target=t, feature_mask=fm, n_samples=samples,
                                            perturbations_per_eval=1), "Captum")
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
    args = p.parse_args()
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
          f"{torch.get_num_threads()} threads")
    print(f"{'method':22s} {'ours s':>8s} {'ref s':>8s} {'ref/ours':>8s}  reference")
    for name, ours, ref, ref_name in cases(model, x, t, layer, args.steps, args.samples, cell):
        if args.methods and name not in args.methods:
            continue
        ours()  # warm-up: allocations, first-call costs
        if ref is not None:
            ref()
        a = b = float("inf")
        for _ in range(args.repeat):  # interleaved, so that a change in the machine's load hits both sides
            a = min(a, timed(ours, 1))
            b = min(b, timed(ref, 1)) if ref is not None else float("nan")
        print(f"{name:22s} {a:8.2f} {b:8.2f} {b / a:8.2f}  {ref_name}")


if __name__ == "__main__":
    main()
