"""Estimated vs counted model rows (and estimated vs measured seconds) of every method on a small model (issue 32).

Run: PYTHONPATH=src python benchmarks/bench_estimate.py [--size 32] [--images 2] [--defaults]
Without --defaults each method runs with the small settings of tests/attribution/test_cost.py.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import torch

import interpretorch  # noqa: F401
from interpretorch.attribution.cost import estimate
from interpretorch.attribution.registry import get_method, method_specs
from interpretorch.core import track
from interpretorch.models import TinyCNN


def main() -> None:
    """Print one markdown row per method: estimated rows, counted rows, ratio, estimated and measured seconds."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--defaults", action="store_true", help="the methods' own defaults, not the small settings")
    a = ap.parse_args()
    spec_file = Path(__file__).parents[1] / "tests" / "attribution" / "test_cost.py"
    mod = importlib.util.spec_from_file_location("test_cost", spec_file)
    small = {}
    if not a.defaults:
        m = importlib.util.module_from_spec(mod)
        mod.loader.exec_module(m)
        small = m.SMALL
    torch.manual_seed(0)
    model = TinyCNN(num_classes=5).eval()
    x = torch.randn(a.images, 3, a.size, a.size)
    names = [s.name for s in method_specs() if s.kind != "token" and s.applies_to(model)]
    costs = {c.method: c for c in estimate(model, x, names, small, batch_size=16)}
    print("| method | estimated rows | counted rows | counted / estimated | estimated s | measured s |")
    print("|---|---:|---:|---:|---:|---:|")
    for n in names:
        t0 = time.perf_counter()
        with track() as p:
            get_method(n)(model, x, "top1", batch_size=16, **small.get(n, {}))
        c = costs[n]
        print(f"| {n} | {c.rows} | {p.done} | {p.done / c.rows:.2f} | {c.seconds:.2f} | "
              f"{time.perf_counter() - t0:.2f} |", flush=True)


if __name__ == "__main__":
    main()
