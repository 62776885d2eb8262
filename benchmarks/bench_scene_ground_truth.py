"""Explanations of the shipped tiny detector and segmenter checked against the scenes' ground truth.

For every object of ``--n`` generated scenes (stream ``--seed``, not used in training or validation):

- detector: the object's detection (``DetectionTarget`` with the object's box and label: pytorch-grad-cam's
  IoU + score of the best-matching predicted box) is explained by each method, all objects of a scene in one
  ``explain_targets`` call. Pointing game with no tolerance: the map's maximum inside the object's box. Two
  objects A, B of one scene: A's map has more of its positive energy in A's box than in B's (every ordered pair).
- segmenter: each object's class region (``SegmentationTarget``, the predicted mask of its class; the objects of a
  scene have distinct classes, so a class region is one object) is explained. Per region: the share of the map's
  positive energy (``energy_pointing_game``) inside the object's true mask, inside the predicted region the target
  sums, inside its box; where the rest goes (a 3 px ring around the object, the scene's other objects, the rest of
  the background); and the uniform share (the region's area over the image's, what a constant map scores). The
  distribution is printed per method: median, fraction of regions above 0.5, by area (below / above the median
  area), by class, by the number of objects in the scene.

Pixel maps are reduced over channels by the absolute sum. A method ``name@layer`` runs a CAM at another layer
(default: the loaded model's CAM layer). Run (CPU, one thread)::

    OMP_NUM_THREADS=1 python benchmarks/bench_scene_ground_truth.py --n 50
    OMP_NUM_THREADS=1 python benchmarks/bench_scene_ground_truth.py --n 50 --box-gradients  # boxes differentiable
    OMP_NUM_THREADS=1 python benchmarks/bench_scene_ground_truth.py --n 50 --methods "" \
        --seg-methods gradcam,gradcam@fuse,hirescam,gradient_x_input --occlusion-window 5 --occlusion-stride 2
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from interpretorch.attribution.registry import explain_targets
from interpretorch.core.targets import DetectionTarget, FunctionTarget, SegmentationTarget
from interpretorch.data.synthetic import make_scene_set
from interpretorch.metrics.localisation import dilate, energy_pointing_game, pointing_game
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


def _method_layer(spec: str, default_layer: str | None) -> tuple[str, str | None]:
    """``name`` or ``name@layer``: the method and its layer (the default layer for a CAM, None otherwise)."""
    name, _, layer = spec.partition("@")
    return name, layer or (default_layer if "cam" in name else None)


def _region_targets(labels: torch.Tensor, masks: torch.Tensor, region: torch.Tensor, kind: str, score: str,
                    reduce: str = "sum") -> list:
    """Each object's region target: its class's logits summed (or averaged) over the predicted region (the default)
    or the true mask, or (``score="log_softmax"``) its class's log-softmax summed over the region."""
    classes = [int(c) + 1 for c in labels]
    given = masks if kind == "true" else [None] * len(classes)
    if score == "logit":
        return [SegmentationTarget(category=c, mask=m, reduce=reduce) for c, m in zip(classes, given)]
    areas = masks if kind == "true" else region

    def log_softmax_sum(c: int, m: torch.Tensor) -> FunctionTarget:
        return FunctionTarget(fn=lambda out, row: (out["out"][row].log_softmax(0)[c] * m).sum(), name="log_softmax")
    return [log_softmax_sum(c, m.float()) for c, m in zip(classes, areas)]


def segmentation_figures(n: int, seed: int, methods: list[str], occlusion: dict | None = None,
                         region_kind: str = "predicted", score: str = "logit", nearest: bool = False,
                         reduce: str = "sum", absolute: bool = False) -> dict[str, dict[str, list]]:
    """Per method: one record per object region of ``n`` scenes (its class, area share, objects in its scene, and
    the shares of the map's positive energy in its true mask, predicted region, box, ring, other objects).
    ``region_kind``/``score``/``reduce``: what the target sums (see ``_region_targets``); ``nearest``: CAMs resized
    from the layer by nearest neighbour instead of bilinearly; ``absolute``: the energy of |map| instead of its
    positive part."""
    seg = load_model("tiny_segmenter")
    scenes = make_scene_set(n, seed=seed)
    x = seg.preprocess.normalize(scenes.images)
    with torch.no_grad():
        predicted = seg.model(x)["out"].argmax(1)
    keys = ("label", "area", "objects", "in_mask", "in_region", "in_box", "ring", "others", "seconds")
    out = {m: {k: [] for k in keys} for m in methods}
    for i in range(n):
        labels, masks = scenes.labels[i], scenes.masks[i]
        region = torch.stack([predicted[i] == int(c) + 1 for c in labels])
        targets = _region_targets(labels, masks, region, region_kind, score, reduce)
        objects = masks.any(0)
        others = objects[None] & ~masks
        ring = dilate(masks, 3) & ~objects[None]
        for m in methods:
            name, layer = _method_layer(m, seg.cam_layer)
            opts = dict(occlusion or {}) if name == "occlusion" else {}
            start = time.perf_counter()
            e = explain_targets(seg.model, x[i], targets, name, layer=layer, **opts)
            if nearest and e.raw is not None and e.raw.dim() == 3:
                maps = F.interpolate(e.raw[:, None], size=tuple(x.shape[-2:]), mode="nearest")[:, 0]
            else:
                maps = _maps(e)
            maps = maps.abs() if absolute else maps
            f = out[m]
            f["seconds"].append(time.perf_counter() - start)
            f["label"] += labels.tolist()
            f["area"] += masks.float().mean((1, 2)).tolist()
            f["objects"] += [len(labels)] * len(labels)
            f["in_mask"] += energy_pointing_game(maps, masks=masks).tolist()
            f["in_region"] += energy_pointing_game(maps, masks=region).tolist()
            f["in_box"] += energy_pointing_game(maps, boxes=scenes.boxes[i][:, None]).tolist()
            f["ring"] += energy_pointing_game(maps, masks=ring).tolist()
            f["others"] += energy_pointing_game(maps, masks=others).tolist()  # NaN: no other object
    return out


def _dist(v: torch.Tensor) -> str:
    v = v[~v.isnan()]
    if not len(v):
        return "n=0"
    return f"median {v.median():.3f}, > 0.5 {(v > 0.5).float().mean():.2f} (n={len(v)})"


def print_segmentation(seg: dict[str, dict[str, list]], n: int, seed: int) -> None:
    """Print each method's per-region distribution of the energy inside the region, and where the rest goes."""
    from interpretorch.data.synthetic import SHAPES

    print(f"segmenter, {n} scenes (seed {seed}): share of each region map's positive energy")
    for m, f in seg.items():
        t = {k: torch.tensor(v, dtype=torch.float64) for k, v in f.items()}
        mk, area = t["in_mask"], t["area"]
        small = area < area.median()
        empty = int(mk.isnan().sum())  # all-zero maps (a CAM whose ReLU kills every cell): no energy anywhere
        print(f"  {m:22s} in mask: mean {mk.nanmean():.3f}, median {mk.nanmedian():.3f}, min "
              f"{mk[~mk.isnan()].min():.3f}{f' ({empty} all-zero maps)' if empty else ''}, "
              f"> 0.5 {(mk > 0.5).double().mean():.2f} (n={len(mk)}); in predicted region: median "
              f"{t['in_region'].nanmedian():.3f}, > 0.5 {(t['in_region'] > 0.5).double().mean():.2f}; in box: "
              f"median {t['in_box'].nanmedian():.3f}, > 0.5 {(t['in_box'] > 0.5).double().mean():.2f}  "
              f"{sum(f['seconds']):.1f} s")
        print(f"  {'':22s} uniform share (area / image): median {area.median():.3f}, max {area.max():.3f}; "
              f"in mask > 3 x uniform: {(mk > 3 * area).double().mean():.2f}")
        print(f"  {'':22s} outside the mask: 3 px ring {t['ring'].nanmean():.3f}, other objects "
              f"{t['others'].nanmean():.3f} (scenes of 2-3 objects), rest "
              f"{(1 - mk - t['ring'] - t['others'].nan_to_num()).nanmean():.3f} (mean shares)")
        print(f"  {'':22s} by area: smaller half {_dist(mk[small])}; larger half {_dist(mk[~small])}")
        print(f"  {'':22s} by class: " + "; ".join(f"{SHAPES[c]} {_dist(mk[t['label'] == c])}"
                                                   for c in range(len(SHAPES))))
        print(f"  {'':22s} by objects in the scene: " + "; ".join(f"{k}: {_dist(mk[t['objects'] == k])}"
                                                                  for k in (1, 2, 3)))


def main() -> None:
    """Print the figures of both models."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--methods", default="gradcam,gradient,gradient_x_input,integrated_gradients,occlusion,rise")
    ap.add_argument("--seg-methods", default="gradcam,hirescam,gradcam++,gradient_x_input,occlusion",
                    help="methods for the segmenter; name@layer runs a CAM at another layer")
    ap.add_argument("--occlusion-window", type=int, default=None, help="occlusion window in px (default: 1/7 side)")
    ap.add_argument("--occlusion-stride", type=int, default=None, help="occlusion stride in px (default: window/2)")
    ap.add_argument("--region", choices=("predicted", "true"), default="predicted",
                    help="segmentation targets sum over the predicted region (default) or the object's true mask")
    ap.add_argument("--score", choices=("logit", "log_softmax"), default="logit",
                    help="segmentation targets sum the class's logits (default) or its log-softmax")
    ap.add_argument("--reduce", choices=("sum", "mean"), default="sum", help="sum (default) or mean over the region")
    ap.add_argument("--absolute", action="store_true", help="energy of |map| instead of its positive part")
    ap.add_argument("--nearest", action="store_true", help="resize CAMs to the image by nearest, not bilinear")
    ap.add_argument("--box-gradients", action="store_true", help="decode the detector's boxes with gradients")
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in args.methods.split(",") if m]
    det = detection_figures(args.n, args.seed, methods, args.box_gradients) if methods else {}
    if det:
        print(f"detector, {args.n} scenes (seed {args.seed}), boxes {'with' if args.box_gradients else 'without'} "
              "gradients:")
    for m, f in det.items():
        h, d = f["hits"], f["a_over_b"]
        print(f"  {m:22s} pointing {sum(h) / len(h):.3f} (n={len(h)} objects)  A over B {sum(d)}/{len(d)} pairs  "
              f"{f['seconds']:.1f} s")
    seg_methods = [m for m in args.seg_methods.split(",") if m]
    if seg_methods:
        occlusion = {k: v for k, v in (("window", args.occlusion_window), ("stride", args.occlusion_stride))
                     if v is not None}
        seg = segmentation_figures(args.n, args.seed, seg_methods, occlusion, args.region, args.score, args.nearest,
                                   args.reduce, args.absolute)
        print(f"segmentation targets: class {args.score} {args.reduce} over the {args.region} region; CAMs resized "
              f"{'nearest' if args.nearest else 'bilinearly'}; energy of the map's "
              f"{'absolute value' if args.absolute else 'positive part'}; occlusion "
              f"{occlusion or 'default window / stride'}")
        print_segmentation(seg, args.n, args.seed)


if __name__ == "__main__":
    main()
