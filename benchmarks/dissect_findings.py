"""Network Dissection's findings (Bau et al. 2017) on the probe CNN trained here and on EfficientNet-Lite0.

1. **Rotation** (paper section 3.2): each dissected layer's representation is rotated by ``Q^alpha`` (``Q`` a
   random rotation, one per layer and seed; undone above the layer, so the outputs are unchanged) and dissected
   again; the paper finds the number of detectors falling as alpha goes from 0 to 1.
2. **Training iterations** (section 4.4): the probe CNN's snapshots (saved by ``train_probe_cnn(snapshots=...)``)
   are dissected; the paper finds detectors emerging as training goes on.
3. **Layers and architectures** (sections 4.1, 4.3): unique detectors (concepts with at least one detector) per
   category and layer, for the trained probe CNN, the same CNN untrained, and Lite0.

    python benchmarks/dissect_findings.py [--train 1500] [--probe 300] [--size 64] [--epochs 10]
        [--alphas 0,0.25,0.5,0.75,1] [--seeds 3] [--snapshots 0,5,10,20,40,80,160,240]
        [--lite0-images 96] [--lite0-layers _blocks.2,_blocks.5,_blocks.10,_blocks.15,_head_act]
        [--lite0-alphas 0,0.5,1] [--lite0-seeds 2] [--no-lite0] [--json out.json] [--out DIR]

With ``--out`` the probe sets, weights and snapshots are kept and reused by a later run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from interpretorch.dissect.broden import BrodenDataset
from interpretorch.dissect.probe import make_probe
from interpretorch.dissect.rotation import dissect_rotated
from interpretorch.dissect.run import dissect
from interpretorch.dissect.train import (PROBE_LAYERS, PROBE_MEAN, PROBE_STD, ProbeCNN, evaluate, snapshot_name,
                                         train_probe_cnn)


def counts(result) -> dict:
    """Per layer: detectors, unique concepts, and per category detectors and unique concepts."""
    out = {}
    for name, ld in result.layers.items():
        s = ld.summary()
        out[name] = {"units": s["units"], "detectors": s["detectors"], "unique": s["unique_concepts"],
                     "per_category": s["detectors_per_category"],
                     "unique_per_category": s["unique_concepts_per_category"]}
    return out


def rotation_sweep(model, ds, layers, alphas, seeds, opts) -> dict:
    """{alpha: {seed: counts}} of the rotated dissections (alpha 0 once: no rotation is drawn)."""
    out: dict = {}
    for a in alphas:
        out[a] = {}
        for s in ([0] if a == 0 else seeds):
            t = time.perf_counter()
            out[a][s] = counts(dissect_rotated(model, ds, layers, a, s, **opts))
            print(f"  alpha {a} seed {s}: " + ", ".join(f"{n} {c['detectors']} ({c['unique']} unique)"
                                                        for n, c in out[a][s].items())
                  + f"  [{time.perf_counter() - t:.0f} s]", flush=True)
    return out


def sweep_table(sweep: dict, layers) -> list[str]:
    """Rows 'alpha  layer: mean detectors [min-max] (mean unique)' over seeds."""
    lines = [f"{'alpha':>5s}  " + "  ".join(f"{n:>24s}" for n in layers)]
    for a, by_seed in sweep.items():
        cells = []
        for n in layers:
            det = [c[n]["detectors"] for c in by_seed.values()]
            uni = [c[n]["unique"] for c in by_seed.values()]
            cells.append(f"{statistics.mean(det):6.1f} [{min(det)}-{max(det)}] u{statistics.mean(uni):4.1f}")
        lines.append(f"{a:5.2f}  " + "  ".join(f"{c:>24s}" for c in cells))
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=1500)
    p.add_argument("--probe", type=int, default=300)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--alphas", default="0,0.25,0.5,0.75,1")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--snapshots", default="0,5,10,20,40,80,160,240")
    p.add_argument("--quantile", type=float, default=0.005)
    p.add_argument("--iou", type=float, default=0.04)
    p.add_argument("--lite0-images", type=int, default=96)
    p.add_argument("--lite0-layers", default="_blocks.2,_blocks.5,_blocks.10,_blocks.15,_head_act")
    p.add_argument("--lite0-alphas", default="0,0.5,1")
    p.add_argument("--lite0-seeds", type=int, default=2)
    p.add_argument("--no-lite0", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--out", default=None, help="keep (and reuse) the probe sets, weights and snapshots here")
    args = p.parse_args()
    tmp = tempfile.TemporaryDirectory()
    root = Path(args.out or tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    alphas = [float(a) for a in args.alphas.split(",")]
    steps = [int(s) for s in args.snapshots.split(",") if s.strip()]
    opts = {"quantile": args.quantile, "iou_threshold": args.iou, "batch_size": 32}
    out: dict = {"settings": vars(args)}
    t0 = time.perf_counter()
    if not (root / "probe" / "index.csv").exists():
        make_probe(root / "train", args.train, args.size, seed=0)
        make_probe(root / "probe", args.probe, args.size, seed=1)
    weights, snaps = root / "probe_cnn.pt", root / "snapshots"
    if weights.exists() and all((snaps / snapshot_name(s)).exists() for s in steps):
        model = ProbeCNN()
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
    else:
        model = train_probe_cnn(root / "train", epochs=args.epochs, snapshots=steps, snapshot_dir=snaps, log=True)
        torch.save(model.state_dict(), weights)
    out["accuracy"] = evaluate(model, root / "probe")
    print(f"probe CNN ready in {time.perf_counter() - t0:.0f} s; held-out {out['accuracy']}", flush=True)
    ds = BrodenDataset(root / "probe", mean=PROBE_MEAN, std=PROBE_STD)
    layers = list(PROBE_LAYERS)

    print("\n1. rotation, probe CNN (detectors mean [min-max] over seeds, u = unique concepts)", flush=True)
    sweep = rotation_sweep(model, ds, layers, alphas, list(range(args.seeds)), opts)
    print("\n".join(sweep_table(sweep, layers)))
    out["probe_rotation"] = {str(a): v for a, v in sweep.items()}

    print("\n2. training snapshots, probe CNN (detectors / unique concepts per layer)", flush=True)
    series = {}
    for s in steps:
        net = ProbeCNN()
        net.load_state_dict(torch.load(snaps / snapshot_name(s), weights_only=True))
        series[s] = counts(dissect(net.eval(), ds, layers, **opts))
        print(f"  step {s:4d}: " + "  ".join(f"{n} {c['detectors']:3d}/{c['unique']:2d}"
                                              for n, c in series[s].items()), flush=True)
    out["probe_snapshots"] = series

    print("\n3. layers: unique concepts per category (trained / untrained probe CNN)", flush=True)
    untrained = counts(dissect(ProbeCNN(seed=0).eval(), ds, layers, **opts))
    out["probe_untrained"] = untrained
    trained = sweep[0.0][0] if 0.0 in sweep else counts(dissect(model, ds, layers, **opts))
    for tag, c in (("trained", trained), ("untrained", untrained)):
        for n in layers:
            print(f"  {tag:9s} {n:8s} detectors {c[n]['detectors']:3d} unique {c[n]['unique']:2d} "
                  f"{c[n]['unique_per_category']}")

    if not args.no_lite0:
        from interpretorch.models import load_model

        print("\n4. EfficientNet-Lite0 (pretrained, ImageNet)", flush=True)
        if not (root / "probe224" / "index.csv").exists():
            make_probe(root / "probe224", args.lite0_images, 224, seed=1)
        loaded = load_model("efficientnet_lite0")
        pre = loaded.preprocess
        ds224 = BrodenDataset(root / "probe224", mean=pre.mean, std=pre.std)
        lite_layers = [n for n in args.lite0_layers.split(",") if n]
        lite = rotation_sweep(loaded.model, ds224, lite_layers, [float(a) for a in args.lite0_alphas.split(",")],
                              list(range(args.lite0_seeds)), {**opts, "batch_size": 16})
        print("\n".join(sweep_table(lite, lite_layers)))
        out["lite0_rotation"] = {str(a): v for a, v in lite.items()}
        if 0.0 in lite:
            for n, c in lite[0.0][0].items():
                print(f"  lite0 {n:10s} detectors {c['detectors']:4d}/{c['units']:4d} unique {c['unique']:2d} "
                      f"{c['unique_per_category']}")
    out["seconds"] = time.perf_counter() - t0
    print(f"\ntotal {out['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
