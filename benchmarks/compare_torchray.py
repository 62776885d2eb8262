"""Extremal Perturbation beside TorchRay's reference code on the sample photos (EfficientNet-Lite0): mask IoU,
the preserved region's score against the clean score (the paper's criterion) and wall-clock time.

TorchRay 1.0.0.2 runs beside our torch when installed without its dependencies (pycocotools, pymongo are only for
its benchmark datasets):
    pip install --no-deps --target /tmp/torchray_t torchray
    PYTHONPATH=/tmp/torchray_t python benchmarks/compare_torchray.py --iterations 300 --images 1
Both run one image at a time here with the same settings (areas, iterations, lr 0.01, weight growth 1.0035 per
iteration, jitter); ours' masks are constrained in area over the image, TorchRay's over the image plus a margin.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--images", type=int, default=1)
    p.add_argument("--areas", type=float, nargs="+", default=[0.1])
    args = p.parse_args()
    from skimage import data
    from torchray.attribution.extremal_perturbation import extremal_perturbation as tr_ep

    from interpretorch import explain
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
        tr_masks, _ = tr_ep(model, xi, c, areas=args.areas, max_iter=args.iterations)
        t_tr = time.perf_counter() - t0
        for param in model.parameters():  # TorchRay leaves them frozen
            param.requires_grad_(True)
        for a, area in enumerate(args.areas):
            mo = ours.extras["masks"][0, a] > 0.5
            mt = tr_masks[a, 0] > 0.5
            iou = float((mo & mt).sum() / (mo | mt).sum().clamp_min(1))
            print(f"{names[i]} class {c} area {area}: IoU(mask>0.5) {iou:.3f}; ours area {float(mo.float().mean()):.3f}"
                  f" TorchRay area {float(mt.float().mean()):.3f}; preserved logit ours "
                  f"{float(ours.extras['mask_scores'][0, a]):.2f} vs clean {float(ours.scores[0]):.2f}; "
                  f"time ours {t_ours:.1f}s TorchRay {t_tr:.1f}s", flush=True)


if __name__ == "__main__":
    main()
