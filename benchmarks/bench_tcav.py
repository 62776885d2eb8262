"""TCAV on EfficientNet-Lite0: interpretorch against its floor and against Captum's TCAV on the same experiments.

    python benchmarks/bench_tcav.py [--concepts 4] [--layers _blocks.8,_blocks.15] [--runs 20] [--set-size 50]
                                    [--class-images 50] [--batch 10] [--threads N] [--clock wall|cpu] [--skip-captum]

The experiment: ``--concepts`` generated concepts (stripes, dots, zigzag, checker) and ``--runs`` random sets of
``--set-size`` images (random crops of scikit-image's photographs), ``--class-images`` images of one class
(crops and mirror images of chelsea, target = its top-1 class), at two layers. Every concept is trained against
every random set and every random set r against random set r+1 (the random-versus-random runs of the
significance test): (concepts + 1) x runs CAVs per layer.

- **floor**: the passes TCAV cannot avoid: one no-grad forward of every concept and random image (the
  activations at both layers), and one forward + backward of the class images to the shallowest layer.
- **interpretorch**: ``run_tcav`` with a fresh on-disk activation cache: activations, all CAVs as one batched
  problem (hinge loss, scikit-learn's SGD as the original), gradients once, scores, t-tests.
- **Captum**: ``TCAV(model, layers, save_path=tmp).interpret(x, experimental_sets, target)`` with the same
  pairs as experimental sets (its default classifier: a torch linear model trained per CAV), which also
  computes and saves the activations. Captum gives no p-values; the t-tests are not part of its time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from interpretorch.capture import capture  # noqa: E402
from interpretorch.concepts.cache import ActivationCache  # noqa: E402
from interpretorch.concepts.generate import concept_set, random_crops  # noqa: E402
from interpretorch.concepts.tcav import run_tcav  # noqa: E402
from interpretorch.models import load_model  # noqa: E402

CONCEPTS = ("stripes", "dots", "zigzag", "checker")


def photos() -> torch.Tensor:
    """scikit-image's colour photographs as (N, 3, 512, 512) floats in [0, 1] (resized to one size)."""
    import torch.nn.functional as F
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                 "brick", "grass", "gravel", "camera", "coins", "moon", "page", "text", "clock"):
        try:
            img = getattr(data, name)()
        except Exception:  # a photograph that needs a download: leave it out
            continue
        img = np.asarray(img, dtype=np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        t = torch.from_numpy(img[..., :3].copy()).permute(2, 0, 1)[None]
        out.append(F.interpolate(t, size=(512, 512), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concepts", type=int, default=4)
    ap.add_argument("--layers", default="_blocks.8,_blocks.15")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--set-size", type=int, default=50)
    ap.add_argument("--class-images", type=int, default=50)
    ap.add_argument("--batch", type=int, default=10, help="images per model call, for everybody")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--skip-captum", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load_before = os.getloadavg()[0]
    import scipy.stats  # noqa: F401 - imported before timing, like Captum's modules
    layers = args.layers.split(",")
    lm = load_model("efficientnet_lite0")
    model, pre = lm.model, lm.preprocess
    pics = photos()
    size = pre.size
    cls_crops, _, _ = random_crops(pics[2:3], args.class_images, size, seed=1, min_scale=0.6)
    cls_crops[1::2] = cls_crops[1::2].flip(-1)
    x = pre.normalize(cls_crops)
    with torch.no_grad():
        target = int(model(x[:1]).argmax())
    concepts = {c: pre.normalize(concept_set(c, args.set_size, size, seed=i))
                for i, c in enumerate(CONCEPTS[:args.concepts])}
    crops, _, _ = random_crops(pics, args.runs * args.set_size, size, seed=2, min_scale=0.2)
    randoms = {f"random_{r}": pre.normalize(crops[r * args.set_size:(r + 1) * args.set_size]) for r in range(args.runs)}
    del crops
    n_fwd = (len(concepts) + len(randoms)) * args.set_size
    print(f"EfficientNet-Lite0 at {size}px, layers {layers}, {len(concepts)} concepts x {args.runs} random runs x "
          f"{args.class_images} class images (target {target}), sets of {args.set_size}: {n_fwd} forwards + "
          f"{args.class_images} forward+backward; batch {args.batch}; {torch.get_num_threads()} threads, "
          f"{args.clock} clock; 1-min load {load_before:.1f}", flush=True)

    # floor
    t0 = clock()
    with capture(model, layers, grad=False) as rec, torch.no_grad():
        for s in list(concepts.values()) + list(randoms.values()):
            for i in range(0, s.shape[0], args.batch):
                rec.activations.clear()
                rec.calls.clear()
                model(s[i:i + args.batch])
    t_fwd = clock() - t0
    t0 = clock()
    with capture(model, layers) as rec:
        for i in range(0, x.shape[0], args.batch):
            rec.activations.clear()
            rec.calls.clear()
            out = model(x[i:i + args.batch])
            rec.gradients(out[:, target], layers)
    t_bwd = clock() - t0
    floor = t_fwd + t_bwd
    print(f"floor: {floor:.1f} s ({t_fwd:.1f} s forwards of the sets, {t_bwd:.1f} s forward+backward of the class)",
          flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = clock()
        res = run_tcav(model, x, concepts, randoms, layers, target, cache=ActivationCache(os.path.join(tmp, "c")),
                       batch_size=args.batch)
        ours = clock() - t0
    n_cavs = sum(len(v) for v in res.cavs.accuracy.values())
    print(f"interpretorch: {ours:.1f} s = {ours / floor:.2f}x the floor ({n_cavs} CAVs, mean held-out accuracy of "
          f"concept CAVs {np.mean([float(res.cavs.accuracy[l][:len(concepts) * args.runs].mean()) for l in layers]):.3f})",
          flush=True)
    for r in res.results:
        print(f"  {r.layer:12s} {r.concept:8s} score {r.score:.3f} +- {r.score_std:.3f}  random {r.random_score:.3f}  "
              f"p={r.p_value:.2g}{'' if r.significant else ' (n.s.)'}")

    if not args.skip_captum:
        from captum.concept import TCAV, Concept

        names = list(concepts) + list(randoms)
        sets = {**concepts, **randoms}
        objs = {n: Concept(i, n, [sets[n][j:j + args.batch] for j in range(0, args.set_size, args.batch)])
                for i, n in enumerate(names)}
        rn = list(randoms)
        exp = [[objs[c], objs[r]] for c in concepts for r in rn] + \
              [[objs[rn[i]], objs[rn[(i + 1) % len(rn)]]] for i in range(len(rn))]
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = clock()
            tcav = TCAV(model, layers, save_path=os.path.join(tmp, "cav"))
            tcav.interpret(x, exp, target=target)
            theirs = clock() - t0
        print(f"Captum TCAV: {theirs:.1f} s = {theirs / floor:.2f}x the floor; interpretorch is "
              f"{theirs / ours:.2f}x faster", flush=True)
    print(f"1-min load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
