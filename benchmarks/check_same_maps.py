"""Same maps before and after a refactor: every registered method's maps on the tiny CNN (and a few on
EfficientNet-Lite0), computed by two source trees in separate processes and compared.

    OMP_NUM_THREADS=1 python benchmarks/check_same_maps.py --old /work/main/src --new src --out /tmp/same-maps

Each tree runs in its own process (``PYTHONPATH=<tree>``), with the same seeded inputs and ``torch.manual_seed(0)``
before each method, and writes every map to ``<out>/<old|new>.pt``; the comparison prints, per method, whether the
maps are bit-identical and their largest absolute difference, and exits 1 when a method's maps differ by more
than ``--tol`` (default 1e-6, the bound issue 25 sets) or exist on one side only.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import sys, time, torch
torch.use_deterministic_algorithms(True, warn_only=True)
from interpretorch import explain
from interpretorch.attribution.registry import resolve_methods
from interpretorch.models import load_model

out, lite = sys.argv[1], sys.argv[2] == "1"
maps, seconds = {}, {}
tiny = load_model("tiny_cnn").model
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 3, 32, 32, generator=g)
for m in resolve_methods("all", tiny):
    torch.manual_seed(0)
    t0 = time.perf_counter()
    try:
        maps["tiny_cnn/" + m] = explain(tiny, x, [m])[m].maps.detach().clone()
    except Exception as e:  # a method that cannot run here is reported, not fatal
        maps["tiny_cnn/" + m] = f"{type(e).__name__}: {str(e)[:200]}"
    seconds["tiny_cnn/" + m] = time.perf_counter() - t0
if lite:
    loaded = load_model("efficientnet_lite0")
    from interpretorch.data.samples import sample_images
    arrays = [a for _, a in sample_images()][:1]
    xl = loaded.preprocess(arrays)
    for m, opts in (("gradcam", {}), ("gradient", {}), ("integrated_gradients", {"steps": 8})):
        torch.manual_seed(0)
        maps["efficientnet_lite0/" + m] = explain(loaded.model, xl, [m], options={m: opts})[m].maps.detach().clone()
torch.save({"maps": maps, "seconds": seconds}, out)
"""


def compute(tree: str, out: Path, lite: bool) -> dict:
    """Run the child in a fresh process on source tree ``tree`` and return what it saved."""
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "OMP_NUM_THREADS": os.environ.get(
        "OMP_NUM_THREADS", "1"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
    subprocess.run([sys.executable, "-c", CHILD, str(out), "1" if lite else "0"], env=env, check=True,
                   cwd=out.parent)
    import torch

    return torch.load(out, weights_only=False)


def main(argv: list[str] | None = None) -> int:
    """Compute both trees' maps and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the source tree before (the folder holding interpretorch/)")
    ap.add_argument("--new", required=True, help="the source tree after")
    ap.add_argument("--out", default="/tmp/same-maps", help="folder for the saved maps and the summary")
    ap.add_argument("--tol", type=float, default=1e-6, help="largest absolute difference allowed")
    ap.add_argument("--no-lite", action="store_true", help="skip the EfficientNet-Lite0 maps")
    args = ap.parse_args(argv)
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    old = compute(args.old, out / "old.pt", not args.no_lite)["maps"]
    new = compute(args.new, out / "new.pt", not args.no_lite)["maps"]
    rows, bad = [], 0
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            same = a == b  # both failed with the same message, or one side is missing
            rows.append({"map": key, "identical": same, "max_abs_diff": None,
                         "note": f"old: {a!r:.80}; new: {b!r:.80}"})
            bad += not same
            continue
        if a.shape != b.shape:
            rows.append({"map": key, "identical": False, "max_abs_diff": None, "note": f"shapes {a.shape} {b.shape}"})
            bad += 1
            continue
        diff = float((a.double() - b.double()).abs().nan_to_num(0.0).max()) if a.numel() else 0.0
        identical = bool(torch.equal(a, b) or (torch.equal(a.isnan(), b.isnan())
                                               and torch.equal(a.nan_to_num(0), b.nan_to_num(0))))
        rows.append({"map": key, "identical": identical, "max_abs_diff": diff})
        bad += diff > args.tol
    for r in rows:
        diff = "" if r["max_abs_diff"] is None else f"max |diff| {r['max_abs_diff']:.3g}"
        print(f"{r['map']:45s} {'identical' if r['identical'] else 'DIFFERS  '} {diff} {r.get('note', '')}")
    tensors = [r for r in rows if r["max_abs_diff"] is not None]
    print(f"{sum(r['identical'] for r in tensors)}/{len(tensors)} maps bit-identical; "
          f"{sum(r['max_abs_diff'] > args.tol for r in tensors)} beyond {args.tol:g}; "
          f"{len(rows) - len(tensors)} not computed on one or both sides")
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
