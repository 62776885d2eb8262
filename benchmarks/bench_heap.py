"""Cost of one forward pass of 8 rows with and without ``kept_heap`` (CPU time and page faults per pass).

Usage: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_heap.py [--rows 8] [--passes 5] [--rounds 3]``

For EfficientNet-Lite0 at 224 px, one thread: the model itself (NCHW), the forward-only copy (channels-last) and
``IncrementalRows.start`` (a whole pass that keeps its maps), each timed for ``--passes`` passes outside and inside
a ``kept_heap`` block, the order alternating every round; medians of the rounds. glibc's behaviour outside the
block depends on what the process allocated before, so the outside figures vary between runs.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from interpretorch.attribution.folded import forward_only_rows
from interpretorch.attribution.incremental import incremental_rows
from interpretorch.core.heap import kept_heap
from interpretorch.models import load_model


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _per_pass(fn, passes: int) -> tuple[float, float]:
    fn()
    f0, t0 = _faults(), time.process_time()
    for _ in range(passes):
        fn()
    return (time.process_time() - t0) / passes * 1000, (_faults() - f0) / passes


def main() -> None:
    """Print ms and page faults per pass, outside and inside ``kept_heap``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model("efficientnet_lite0").model.eval()
    x = torch.randn(args.rows, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    copy, layout = forward_only_rows(model, x)
    xc = x.contiguous(memory_format=layout)
    run = incremental_rows(model, x)
    cases = {"model (NCHW)": lambda: model(x), "forward-only copy": lambda: copy(xc)}
    if run is not None:
        cases["incremental start (whole pass)"] = lambda: run.start(x)
    res: dict = {}
    with torch.no_grad():
        for r in range(args.rounds):
            for kept in ((False, True) if r % 2 == 0 else (True, False)):
                for name, fn in cases.items():
                    if kept:
                        with kept_heap():
                            res.setdefault((name, kept), []).append(_per_pass(fn, args.passes))
                    else:
                        res.setdefault((name, kept), []).append(_per_pass(fn, args.passes))
    print(f"EfficientNet-Lite0, {args.rows} rows at 224 px, 1 thread, CPU ms per pass (page faults per pass), "
          f"median of {args.rounds} rounds of {args.passes} passes\n")
    print("| pass | default malloc | kept_heap |\n|---|---:|---:|")
    for name in cases:
        cells = []
        for kept in (False, True):
            ms = statistics.median(v[0] for v in res[(name, kept)])
            fl = statistics.median(v[1] for v in res[(name, kept)])
            cells.append(f"{ms:.0f} ({fl:,.0f})")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
