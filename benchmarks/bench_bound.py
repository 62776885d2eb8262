"""How much faster than Quantus any exact evaluation of its perturbation metrics can be: the work each row must do.

Usage: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_bound.py [--images 8] [--only region,pixel]``

A perturbation metric needs the model's output on every perturbed input it scores. An engine that reuses earlier
work (ours: ``IncrementalRows``) can skip, in every layer, the output positions whose values equal those of an input
it has already run, and nothing else: a position whose value changed must be computed, whatever the method. This
script measures that, per metric of ``bench_metrics.py --families`` (same model, photos, maps and settings):

* the rows: every input Quantus 0.6 scores, recorded by a forward pre-hook on the model while its metric runs
  (``--images`` equals the batch size, so row j of each call is image j);
* for each row, the reference it may start from: the input of the same image, the clean one or any row before it,
  with the fewest differing pixels (the most generous choice; a row equal to one already run costs nothing);
* for each leaf module of the forward-only copy (convolutions with their padding, activations, pooling, the
  classifier), the share of its output positions (H x W) where any channel differs from the reference's;
* the leaf modules' CPU time in a pass of ``--batch-size`` rows of the copy (one thread; the time outside leaf
  modules, residual additions and the like, gets the row's average share).

The least time an exact engine needs is then the sum over rows of (the copy's time per row) x (the row's weighted
share of changed positions): every changed value computed at dense-kernel speed, every unchanged one skipped at
no cost, no bookkeeping. ``bound = Quantus's time / that least time`` is the most any exact implementation with
the copy's kernels can gain over Quantus on this model; the table prints it beside our measured ratio (same
process, one round each, process CPU time).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_metrics  # noqa: E402

from interpretorch.attribution.folded import forward_only_rows  # noqa: E402
from interpretorch.core.heap import kept_heap  # noqa: E402


def leaf_times(copy: torch.nn.Module, rows: torch.Tensor, passes: int = 5) -> tuple[dict[str, float], float]:
    """CPU seconds of each leaf module of ``copy`` in one pass over ``rows`` (median of ``passes``) and the pass's."""
    starts: dict[str, float] = {}
    spent: dict[str, list[float]] = {}

    def pre(name):
        def hook(_m, _inp):
            starts[name] = time.process_time()
        return hook

    def post(name):
        def hook(_m, _inp, _out):
            spent.setdefault(name, []).append(time.process_time() - starts[name])
        return hook

    leaves = {n: m for n, m in copy.named_modules() if not list(m.children())}
    handles = [m.register_forward_pre_hook(pre(n)) for n, m in leaves.items()]
    handles += [m.register_forward_hook(post(n)) for n, m in leaves.items()]
    totals = []
    try:
        with torch.no_grad(), kept_heap():
            copy(rows)
            spent.clear()
            for _ in range(passes):
                t0 = time.process_time()
                copy(rows)
                totals.append(time.process_time() - t0)
    finally:
        for h in handles:
            h.remove()
    return {n: statistics.median(v) for n, v in spent.items()}, statistics.median(totals)


class ChangedShare:
    """Hooks on the copy's leaf modules: the share of each module's output positions that differ between a row and
    its reference."""

    def __init__(self, copy: torch.nn.Module, layout: torch.memory_format) -> None:
        self.copy, self.layout = copy, layout
        self.leaves = {n: m for n, m in copy.named_modules() if not list(m.children())}
        self.ref: dict[str, torch.Tensor] = {}
        self.share: dict[str, float] = {}
        self.mode = "ref"

    def _hook(self, name: str):
        def hook(_m, _inp, out):
            if not isinstance(out, torch.Tensor):
                return
            if self.mode == "ref":
                self.ref[name] = out.detach().clone()  # before an in-place activation overwrites it
                return
            differ = out != self.ref[name]
            if differ.dim() == 4:
                self.share[name] = float(differ.any(1).double().mean())
            else:
                self.share[name] = float(differ.any())
        return hook

    def __call__(self, row: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
        """Per leaf module, the share of output positions of ``row`` that differ from ``ref``'s."""
        handles = [m.register_forward_hook(self._hook(n)) for n, m in self.leaves.items()]
        try:
            with torch.no_grad():
                self.mode = "ref"
                self.copy(ref[None].contiguous(memory_format=self.layout))
                self.mode = "row"
                self.share = {}
                self.copy(row[None].contiguous(memory_format=self.layout))
        finally:
            for h in handles:
                h.remove()
        return dict(self.share)


def record_rows(model: torch.nn.Module, fn, n_images: int) -> list[list[torch.Tensor]]:
    """Run ``fn`` (a Quantus metric) and return, per image, the inputs it gave ``model``, in order."""
    calls: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _m, inp: calls.append(inp[0].detach().clone()))
    try:
        fn()
    finally:
        handle.remove()
    per_image: list[list[torch.Tensor]] = [[] for _ in range(n_images)]
    for c in calls:
        if c.shape[0] != n_images:
            raise SystemExit(f"a call of {c.shape[0]} rows: --images must equal --batch-size ({n_images})")
        for j in range(n_images):
            per_image[j].append(c[j])
    return per_image


def least_shares(rows: list[torch.Tensor], clean: torch.Tensor, measure: ChangedShare,
                 weights: dict[str, float]) -> list[float]:
    """For each row, the time-weighted share of output positions an exact engine must recompute."""
    known = [clean]
    out = []
    w_total = sum(weights.values())
    for r in rows:
        differ = [int((r != k).any(0).sum()) for k in known]
        best = int(np.argmin(differ))
        if differ[best] == 0:
            out.append(0.0)
            continue
        share = measure(r, known[best])
        out.append(sum(weights[n] * share.get(n, 1.0) for n in weights) / w_total)
        known.append(r)
    return out


def main(argv: list[str] | None = None) -> None:
    """Print, per metric, Quantus's time, the least time of an exact engine, their ratio and ours."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--only", default=None, help="comma-separated name prefixes, as bench_metrics.py --only")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    fam_args = argparse.Namespace(images=args.images, batch_size=args.images, only=args.only)
    pairs, _floors, model, x = bench_metrics.family_pairs(fam_args)
    copy, layout = forward_only_rows(model, x)
    times, pass_s = leaf_times(copy, x.contiguous(memory_format=layout))
    other = max(pass_s - sum(times.values()), 0.0)
    row_s = pass_s / x.shape[0]
    measure = ChangedShare(copy, layout)
    print(f"EfficientNet-Lite0, {x.shape[0]} images, one thread: the copy's pass of {x.shape[0]} rows "
          f"{pass_s * 1000:.0f} ms ({other / pass_s:.0%} outside leaf modules), load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| metric | rows | mean share to recompute | Quantus s | least exact s | **bound: Quantus / least** | "
          "ours s | Quantus / ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (ours_fn, theirs_fn, *_rest) in pairs.items():
        if name == "sparseness":
            continue
        theirs_fn()  # warm-up, outside the recording
        t0 = time.process_time()
        per_image = record_rows(model, theirs_fn, x.shape[0])
        quantus_s = time.process_time() - t0
        ours_fn()
        t0 = time.process_time()
        ours_fn()
        ours_s = time.process_time() - t0
        shares = [s for i, rows in enumerate(per_image) for s in least_shares(rows, x[i], measure, times)]
        least_s = row_s * sum(shares)
        print(f"| {name} | {len(shares)} | {statistics.mean(shares):.2f} | {quantus_s:.2f} | {least_s:.2f} | "
              f"**{quantus_s / least_s:.1f}** | {ours_s:.2f} | {quantus_s / ours_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
