"""Extremal Perturbation beside TorchRay's reference code on the sample photos (EfficientNet-Lite0): mask IoU,
each mask's preserved logit against the clean one (the paper's criterion), and wall-clock time.

TorchRay 1.0.0.2 runs beside our torch when installed without its dependencies (pycocotools, pymongo are only for
its benchmark datasets):
    pip install --no-deps --target /tmp/torchray_t torchray
    PYTHONPATH=/tmp/torchray_t python benchmarks/compare_torchray.py --iterations 800 --images 4 [--yardstick]
Both run one image at a time with the same settings (areas, iterations, lr 0.01, weight growth 1.0035 per
iteration, jitter); both constrain the area over the same canvas (the image plus a margin of sigma pixels).
TorchRay returns the mask of its last forward pass, before its last step, so it runs one iteration more to
return the mask after the same number of steps as ours. Both masks are scored with our blur pyramid.

The optimisation amplifies rounding: the two codes agree to 4e-5 after one step and 1e-3 after 20, but by a few
hundred steps the masks can part. ``--yardstick`` measures that sensitivity on TorchRay alone: its mask against
its own mask on the input plus Gaussian noise of std 1e-6.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iterations", type=int, default=800)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--areas", type=float, nargs="+", default=[0.1])
    p.add_argument("--yardstick", action="store_true",
                   help="also run TorchRay on the input plus noise of std 1e-6 (its own sensitivity to rounding)")
    args = p.parse_args()
    from skimage import data
    from torchray.attribution.extremal_perturbation import extremal_perturbation as tr_ep

    from interpretorch import explain
    from interpretorch.attribution.masks import apply_pyramid, blur_pyramid
    from interpretorch.models import load_model

    torch.manual_seed(0)
    loaded = load_model("efficientnet_lite0")
    model = loaded.model.eval()
    photos = [data.chelsea(), data.coffee(), data.astronaut(), data.rocket()][:args.images]
    x = loaded.preprocess(photos)
    names = ["chelsea", "coffee", "astronaut", "rocket"]
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        t0 = time.perf_counter()
        ours = explain(model, xi, "extremal_perturbation", options={"extremal_perturbation": {
            "iterations": args.iterations, "lr": 0.01, "regul_growth": 1.0035, "areas": args.areas}})
        t_ours = time.perf_counter() - t0
        c = int(ours.target[0])
        t0 = time.perf_counter()
        tr_masks, _ = tr_ep(model, xi, c, areas=args.areas, max_iter=args.iterations + 1)
        t_tr = time.perf_counter() - t0
        if args.yardstick:
            noisy = xi + 1e-6 * torch.randn(xi.shape, generator=torch.Generator().manual_seed(1))
            tr_noisy, _ = tr_ep(model, noisy, c, areas=args.areas, max_iter=args.iterations + 1)
        for param in model.parameters():  # TorchRay leaves them frozen
            param.requires_grad_(True)
        pyramid = blur_pyramid(xi, 8, 20.0)
        for a, area in enumerate(args.areas):
            mo = ours.extras["masks"][0, a] > 0.5
            mt = tr_masks[a, 0] > 0.5
            with torch.no_grad():
                tr_logit = float(model(apply_pyramid(pyramid, tr_masks[a:a + 1]))[0, c])
            line = (f"{names[i]} class {c} area {area}: IoU(mask>0.5) {iou(mo, mt):.3f}; mask area ours "
                    f"{float(mo.float().mean()):.3f} TorchRay {float(mt.float().mean()):.3f}; preserved logit ours "
                    f"{float(ours.extras['mask_scores'][0, a]):.2f} TorchRay {tr_logit:.2f} vs clean "
                    f"{float(ours.scores[0]):.2f}; time ours {t_ours:.1f}s TorchRay {t_tr:.1f}s")
            if args.yardstick:
                line += f"; TorchRay vs TorchRay on input + 1e-6 noise: IoU {iou(mt, tr_noisy[a, 0] > 0.5):.3f}"
            print(line, flush=True)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks."""
    return float((a & b).sum() / (a | b).sum().clamp_min(1))


if __name__ == "__main__":
    main()
