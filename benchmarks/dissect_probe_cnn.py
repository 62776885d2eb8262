"""Detectors per category per layer of a small CNN trained on the synthetic probe set, and of the same CNN untrained.

Bau et al. 2017 find colour and texture detectors early, objects and parts later, and more detectors after
training. This script measures what a 4-block ProbeCNN (``interpretorch.dissect.train``) shows:

1. ``make_probe`` a training set (``--train`` images, seed 0) and a held-out probe set (``--probe`` images,
   seed 1), both at ``--size`` px;
2. train the CNN (scene + shape of the largest object), report its held-out accuracy;
3. dissect ``conv1.2`` .. ``conv4.2`` of the trained and of the untrained (same seed) network on the held-out
   set and print detectors per category per layer;
4. Net2Vec on the trained ``--net2vec-layer``: per pixel concept, the IoU of the learned unit combination beside
   the best single unit's (both on the odd-indexed held-out images; the even ones train).

    python benchmarks/dissect_probe_cnn.py [--train 1500] [--probe 300] [--size 64] [--epochs 10]
                                           [--quantile 0.005] [--iou 0.04] [--json out.json] [--out DIR]
                                           [--net2vec-layer conv4.2] [--net2vec-steps 100]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from interpretorch.dissect.broden import BrodenDataset
from interpretorch.dissect.net2vec import net2vec
from interpretorch.dissect.probe import make_probe
from interpretorch.dissect.run import dissect, write_summary
from interpretorch.dissect.train import PROBE_LAYERS, PROBE_MEAN, PROBE_STD, ProbeCNN, evaluate, train_probe_cnn


def table(result, categories) -> list[str]:
    """Rows 'layer  units  detectors  per category...' of a dissection."""
    lines = [f"{'layer':8s} {'units':>5s} {'det':>4s} {'uniq':>4s} " + " ".join(f"{c:>8s}" for c in categories)]
    for name, ld in result.layers.items():
        s = ld.summary()
        lines.append(f"{name:8s} {s['units']:5d} {s['detectors']:4d} {s['unique_concepts']:4d} "
                     + " ".join(f"{s['detectors_per_category'][c]:8d}" for c in categories))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--probe", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quantile", type=float, default=0.005)
    p.add_argument("--iou", type=float, default=0.04)
    p.add_argument("--json", default=None)
    p.add_argument("--net2vec-layer", default="conv4.2")
    p.add_argument("--net2vec-steps", type=int, default=100)
    p.add_argument("--out", default=None, help="also keep the probe sets, weights and summaries here")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = Path(args.out or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    make_probe(root / "train", args.train, args.size, seed=0)
    make_probe(root / "probe", args.probe, args.size, seed=1)
    t1 = time.perf_counter()
    model = train_probe_cnn(root / "train", epochs=args.epochs, log=True)
    t2 = time.perf_counter()
    torch.save(model.state_dict(), root / "probe_cnn.pt")
    acc = evaluate(model, root / "probe")
    print(f"probe sets {t1 - t0:.1f} s; training {t2 - t1:.1f} s; held-out {acc}")
    ds = BrodenDataset(root / "probe", mean=PROBE_MEAN, std=PROBE_STD)
    out = {"settings": vars(args), "accuracy": acc, "train_seconds": t2 - t1}
    for tag, net in (("trained", model), ("untrained", ProbeCNN(seed=0).eval())):
        t = time.perf_counter()
        res = dissect(net, ds, list(PROBE_LAYERS), quantile=args.quantile, iou_threshold=args.iou, batch_size=32)
        print(f"\n{tag} ({time.perf_counter() - t:.1f} s to dissect {len(PROBE_LAYERS)} layers over {len(ds)} images)")
        print("\n".join(table(res, ds.categories)))
        out[tag] = res.summary()
        write_summary(res, root / f"summary_{tag}.json")
    t = time.perf_counter()
    vecs = net2vec(model, ds, args.net2vec_layer, quantile=args.quantile, steps=args.net2vec_steps, batch_size=32)
    print(f"\nNet2Vec on {args.net2vec_layer} ({time.perf_counter() - t:.1f} s): concept, IoU of the combination, "
          "best single unit and its IoU")
    for v in sorted(vecs, key=lambda v: (v.category, v.label)):
        print(f"  {v.category:8s} {v.label:10s} {v.iou:.3f}   unit {v.unit:3d} {v.unit_iou:.3f}")
    out["net2vec"] = [{"label": v.label, "category": v.category, "iou": v.iou, "unit": v.unit,
                       "unit_iou": v.unit_iou} for v in vecs]
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
