"""Issue 18's methods: time as a ratio to the forward / backward passes each needs (its floor), beside
pytorch-grad-cam 1.5.7 and TorchRay where they have the method.

Run in the benchmark environment (torchvision + grad-cam), with TorchRay installed without its dependencies:
    pip install --no-deps --target /tmp/torchray_t torchray
    PYTHONPATH=src:/tmp/torchray_t .bench-venv/bin/python benchmarks/bench_masks.py --images 2
The floor of a method is n_f forward rows x the time of one forward row plus n_fb forward+backward rows x the
time of one such row (both measured here on the same images at the same batch size); the ratio is the
method's time over its floor. Peer ratios use the same floor.
"""
from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--iterations", type=int, default=10, help="iterations of the two mask optimisations")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--no-peers", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from skimage import data

    from interpretorch import explain
    from interpretorch.attribution.common import resolve_layer
    from interpretorch.models import load_model
    from interpretorch.models.layers import get_layer

    loaded = load_model("efficientnet_lite0")
    model = loaded.model.eval()
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()]
    x = loaded.preprocess((photos * 4)[:args.images])
    b = x.shape[0]
    layer = resolve_layer(model, None, x)
    with torch.no_grad():
        c = model(x).shape[1]
    from interpretorch.capture import capture

    with capture(model, layer, grad=False) as rec:
        model(x)
        a = rec[layer]
    channels = a.shape[1]

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        torch.autograd.grad(out.max(1).values.sum(), xi)

    fwd()
    t_f = timed(fwd, 3) / b
    t_fb = timed(fwd_bwd, 3) / b
    it = args.iterations
    tiles = 1 + 4 + 4  # SESS tiles per 224 px image at 3 scales (224, 288, 352)
    # method: (options, forward rows, forward+backward rows) for the whole batch
    plan = {
        "eigengradcam": ({}, 0, b), "gradcam_elementwise": ({}, 0, b), "fem": ({}, b, 0), "kpcacam": ({}, b, 0),
        "shapleycam": ({}, 0, 2 * b), "finercam": ({}, 0, b), "fullgrad": ({}, 0, b),
        "smoothgradcampp": ({"n_samples": 8}, b, 8 * b), "groupcam": ({}, 33 * b, b),
        "sscam": ({"n_samples": 1}, b + channels * b, 0), "sess": ({}, b + tiles * b, tiles * b),
        "meaningful_perturbation": ({"iterations": it}, 2 * b, it * b),
        "extremal_perturbation": ({"iterations": it}, 2 * b, it * b),
    }
    names = args.methods or [m for m in plan if m != "sscam"]
    peers = {}
    if not args.no_peers:
        import pytorch_grad_cam as pgc

        target = [get_layer(model, layer)]
        peers = {"eigengradcam": lambda: pgc.EigenGradCAM(model, target)(x, None),
                 "gradcam_elementwise": lambda: pgc.GradCAMElementWise(model, target)(x, None),
                 "fem": lambda: pgc.FEM(model, target)(x, None),
                 "kpcacam": lambda: pgc.KPCA_CAM(model, target)(x, None),
                 "shapleycam": lambda: pgc.ShapleyCAM(model, target)(x, None),
                 "finercam": lambda: pgc.FinerCAM(model, target)(x, None),
                 "fullgrad": lambda: pgc.FullGrad(model, [])(x, None),
                 "sess": lambda: pgc.SESS(model, target, num_scales=3)(x, None)}
        try:
            from torchray.attribution.extremal_perturbation import extremal_perturbation as tr_ep

            def torchray_ep():
                with torch.no_grad():
                    cls = model(x).argmax(1).tolist()
                for i in range(b):
                    tr_ep(model, x[i:i + 1], cls[i], areas=[0.1], max_iter=it)
                for prm in model.parameters():
                    prm.requires_grad_(True)

            peers["extremal_perturbation"] = torchray_ep
        except ImportError as e:
            print(f"TorchRay not importable ({e}); its column is left empty")
    print(f"EfficientNet-Lite0, {b} images at 224 px, {c} classes, layer {layer} ({channels} channels); "
          f"one forward row {t_f * 1e3:.1f} ms, one forward+backward row {t_fb * 1e3:.1f} ms; "
          f"{torch.get_num_threads()} threads")
    print("| method | ours (s) | floor (s) | ours / floor | peer (s) | peer / floor |")
    print("|---|---|---|---|---|---|")
    for m in names:
        opts, n_f, n_fb = plan[m]
        floor = n_f * t_f + n_fb * t_fb
        ours = timed(lambda: explain(model, x, m, layer=layer if m not in ("fullgrad", "meaningful_perturbation",
                                                                              "extremal_perturbation") else None,
                                     options={m: opts} if opts else None))
        row = f"| {m} | {ours:.2f} | {floor:.2f} | {ours / floor:.2f} |"
        if m in peers:
            tp = timed(peers[m])
            row += f" {tp:.2f} | {tp / floor:.2f} |"
        else:
            row += " - | - |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
