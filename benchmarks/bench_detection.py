"""All detections of one image explained by Grad-CAM in one call against pytorch-grad-cam's loop over detections.

torchvision's Faster R-CNN (MobileNetV3-Large FPN, random weights, fixed seed, every box kept), one 3x480x640
image, its top ``--k`` detections. interpretorch: ``explain_targets`` with one ``DetectionTarget`` per detection
(one forward pass of the image, then one backward pass per target to the layer), through ``BatchedDetector``, whose
R-CNN path keeps the box branch's graph on the kept detections' proposal rows only (at most 100 rows instead of
about 1000 proposals; ``models/rcnn_rows.py``). pytorch-grad-cam: one ``GradCAM`` call per detection with its
``FasterRCNNBoxScoreTarget``, as its detection tutorial does, on the model as torchvision calls it. Same layer
(``backbone.body.16``), each library on its own copy of the model; runs interleaved after a warm-up, median of
``--repeats``. The maps are compared too (Pearson r per detection). Run in the torchvision environment::

    OMP_NUM_THREADS=1 python benchmarks/bench_detection.py --k 8 --repeats 3

Measured 2026-12-03 on a loaded machine (load average 6-9 on 2 cores), one thread, two runs: 7.99 s against
98.75 s (12.4x) and 4.16 s against 72.52 s (17.4x); Pearson r 1.000000 (6 decimals) for each of the 8 detections
(benchmarks/README.md). 2.63x before the kept-rows path.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch


def main() -> None:
    """Print the median seconds of both and their ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-size", type=int, default=800, help="the detector's own resize (torchvision's default)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
    from torchvision.models import get_model

    from interpretorch.attribution.registry import explain_targets
    from interpretorch.core.targets import DetectionTarget
    from interpretorch.models.vision_tasks import BatchedDetector

    torch.manual_seed(0)
    model = get_model("fasterrcnn_mobilenet_v3_large_fpn", weights=None, weights_backbone=None,
                      box_score_thresh=0.0, min_size=args.min_size).eval()
    x = torch.rand(1, 3, 480, 640)
    with torch.no_grad():
        det = model(x)[0]
    boxes, labels = det["boxes"][:args.k], det["labels"][:args.k]
    ours_model, theirs_model = BatchedDetector(copy.deepcopy(model)), copy.deepcopy(model)
    layer = "model.backbone.body.16"
    targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(boxes, labels)]

    def ours() -> torch.Tensor:
        return explain_targets(ours_model, x[0], targets, "gradcam", layer=layer).maps

    def theirs() -> torch.Tensor:
        out = []
        with GradCAM(theirs_model, [theirs_model.backbone.body["16"]]) as cam:
            for b, c in zip(boxes, labels):
                out.append(torch.from_numpy(cam(x, targets=[FasterRCNNBoxScoreTarget([int(c)], b[None].numpy())])[0]))
        return torch.stack(out)

    a, b = ours(), theirs()  # warm-up, and the maps compared
    r = [float(torch.corrcoef(torch.stack([p.flatten().double(), q.flatten().double()]))[0, 1]) for p, q in zip(a, b)]
    times: dict[str, list[float]] = {"interpretorch": [], "pytorch-grad-cam": []}
    for rep in range(args.repeats):
        order = [("interpretorch", ours), ("pytorch-grad-cam", theirs)]
        for name, fn in (order if rep % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"Faster R-CNN MobileNetV3-FPN (min_size {args.min_size}), 480x640 image, {len(targets)} detections, "
          f"Grad-CAM at {layer}, median of {args.repeats}:")
    for k, v in med.items():
        print(f"  {k:18s} {v:.2f} s")
    print(f"  ratio {med['pytorch-grad-cam'] / med['interpretorch']:.2f}x; Pearson r of the maps: min {min(r):.4f}")
    print("  Pearson r per detection: " + ", ".join(f"{v:.6f}" for v in r))


if __name__ == "__main__":
    main()
