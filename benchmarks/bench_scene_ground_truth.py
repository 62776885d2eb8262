"""Explanations of the shipped tiny detector and segmenter checked against the scenes' ground truth.

For every object of ``--n`` generated scenes (stream ``--seed``, not used in training or validation):

- detector: the object's detection (``DetectionTarget`` with the object's box and label: pytorch-grad-cam's
  IoU + score of the best-matching predicted box) is explained by each method, all objects of a scene in one
  ``explain_targets`` call. Pointing game with no tolerance: the map's maximum inside the object's box. Two
  objects A, B of one scene: A's map has more of its positive energy in A's box than in B's (every ordered pair).
- segmenter: each object's class region (``SegmentationTarget``, the predicted mask of its class) is explained;
  energy inside the object's mask, and inside its box.

Pixel maps are reduced over channels by the absolute sum. Run (CPU, one thread)::

    OMP_NUM_THREADS=1 python benchmarks/bench_scene_ground_truth.py --n 50
    OMP_NUM_THREADS=1 python benchmarks/bench_scene_ground_truth.py --n 50 --box-gradients  # boxes differentiable
"""
from __future__ import annotations

import argparse
import time

import torch

from interpretorch.attribution.registry import explain_targets
from interpretorch.core.targets import DetectionTarget, SegmentationTarget
from interpretorch.data.synthetic import make_scene_set
from interpretorch.metrics.localisation import energy_pointing_game, pointing_game
from interpretorch.models import load_model


def _maps(e) -> torch.Tensor:
    return e.maps if e.maps.dim() == 3 else e.maps.abs().sum(1)


def detection_figures(n: int, seed: int, methods: list[str], box_gradients: bool = False) -> dict[str, dict]:
    """Per method: pointing-game hits, A-over-B energy comparisons and seconds, over ``n`` scenes."""
    det = load_model("tiny_detector")
    det.model.box_gradients = box_gradients
    scenes = make_scene_set(n, seed=seed)
    x = det.preprocess.normalize(scenes.images)
    out = {m: {"hits": [], "a_over_b": [], "seconds": 0.0} for m in methods}
    for i in range(n):
        boxes, labels = scenes.boxes[i], scenes.labels[i]
        targets = [DetectionTarget(boxes=b, labels=int(c)) for b, c in zip(boxes, labels)]
        for m in methods:
            start = time.perf_counter()
            maps = _maps(explain_targets(det.model, x[i], targets, m, layer=det.cam_layer if "cam" in m else None))
            out[m]["seconds"] += time.perf_counter() - start
            out[m]["hits"] += pointing_game(maps, boxes=boxes[:, None], tolerance=0).tolist()
            for a in range(len(targets)):
                for b in range(len(targets)):
                    if a != b:
                        ea = float(energy_pointing_game(maps[a:a + 1], boxes=boxes[a][None, None]))
                        eb = float(energy_pointing_game(maps[a:a + 1], boxes=boxes[b][None, None]))
                        out[m]["a_over_b"].append(ea > eb)
    return out


def segmentation_figures(n: int, seed: int, methods: list[str]) -> dict[str, dict]:
    """Per method: energy of each object's region map inside its mask and inside its box, over ``n`` scenes."""
    seg = load_model("tiny_segmenter")
    scenes = make_scene_set(n, seed=seed)
    x = seg.preprocess.normalize(scenes.images)
    out = {m: {"in_mask": [], "in_box": [], "seconds": 0.0} for m in methods}
    for i in range(n):
        targets = [SegmentationTarget(category=int(c) + 1) for c in scenes.labels[i]]
        for m in methods:
            start = time.perf_counter()
            maps = _maps(explain_targets(seg.model, x[i], targets, m, layer=seg.cam_layer if "cam" in m else None))
            out[m]["seconds"] += time.perf_counter() - start
            out[m]["in_mask"] += energy_pointing_game(maps, masks=scenes.masks[i]).tolist()
            out[m]["in_box"] += energy_pointing_game(maps, boxes=scenes.boxes[i][:, None]).tolist()
    return out


def main() -> None:
    """Print the figures of both models."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--methods", default="gradcam,gradient,gradient_x_input,integrated_gradients,occlusion,rise")
    ap.add_argument("--seg-methods", default="gradcam,gradient_x_input,occlusion")
    ap.add_argument("--box-gradients", action="store_true", help="decode the detector's boxes with gradients")
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    det = detection_figures(args.n, args.seed, methods, args.box_gradients)
    print(f"detector, {args.n} scenes (seed {args.seed}), boxes {'with' if args.box_gradients else 'without'} "
          "gradients:")
    for m, f in det.items():
        h, d = f["hits"], f["a_over_b"]
        print(f"  {m:22s} pointing {sum(h) / len(h):.3f} (n={len(h)} objects)  A over B {sum(d)}/{len(d)} pairs  "
              f"{f['seconds']:.1f} s")
    seg_methods = [m for m in args.seg_methods.split(",") if m]
    if seg_methods:
        seg = segmentation_figures(args.n, args.seed, seg_methods)
        print(f"segmenter, {args.n} scenes: energy of each object's region map")
        for m, f in seg.items():
            mk, bx = torch.tensor(f["in_mask"]), torch.tensor(f["in_box"])
            print(f"  {m:22s} in mask: mean {mk.nanmean():.3f}, min {mk.min():.3f}; in box: mean {bx.nanmean():.3f}, "
                  f"share of regions > 0.5: {(bx > 0.5).float().mean():.3f} (n={len(bx)})  {f['seconds']:.1f} s")


if __name__ == "__main__":
    main()
