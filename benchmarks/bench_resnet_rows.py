"""Incremental rows on a ResNet: what localising the stem's max pool (and average pools) gains.

Usage: ``PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_resnet_rows.py [--images 8] [--rounds 2]``

A ResNet-18 built here (torchvision's layout: 7x7 stride-2 stem, 3x3 stride-2 max pool, BasicBlocks [2, 2, 2, 2];
seeded random weights, as the timing depends on the shapes only; torchvision does not import beside the main
install's torch), 224 px images, one thread, process CPU time. Region perturbation (28 px patches, 20 regions) and
pixel flipping (1792-pixel steps, 28) on random maps, three ways in one process: the rows run whole
(``incremental.disabled()``), the engine with its pools run whole (as before pools were localised: every map after
the stem's pool then runs whole), and the engine as it is. The values of the three agree (printed).
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from unittest import mock

import torch
from torch import nn

from interpretorch.attribution import incremental
from interpretorch.metrics import pixel_flipping, region_perturbation


class Basic(nn.Module):
    """torchvision's BasicBlock: two 3x3 convolutions with BatchNorm, a projection where the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.down(x))


def resnet18(classes: int = 1000) -> nn.Module:
    """ResNet-18 with seeded random weights, in eval mode."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes)]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def main() -> None:
    """Print CPU seconds of each metric three ways and the largest difference between their values."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = resnet18()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(args.images, 3, 224, 224, generator=g)
    maps = torch.rand(args.images, 224, 224, generator=g)
    metrics = {"region perturbation (28 px, 20 regions)":
               lambda m: region_perturbation(m, x, maps, patch_size=28, regions_evaluation=20,
                                             batch_size=args.images),
               "pixel flipping (1792 px steps, 28)":
               lambda m: pixel_flipping(m, x, maps, features_in_step=1792, batch_size=args.images)}
    # a second model whose engine is traced with its pools left whole (as before they were localised); the
    # trace is cached per model, so later calls reuse it without the patch
    before = copy.deepcopy(model)
    with mock.patch.object(incremental.IncrementalRows, "_pool_args", staticmethod(lambda n: None)):
        engine = incremental.incremental_rows(before, x)
    assert engine is not None and not engine.pools, "no engine with its pools whole"
    assert incremental.incremental_rows(model, x).pools, "no engine with localised pools"

    def whole(fn):
        with incremental.disabled():
            return fn(model)

    ways = {"rows whole": whole, "engine, pools whole": lambda fn: fn(before), "engine": lambda fn: fn(model)}
    print(f"ResNet-18 (random weights), {args.images} images at 224 px, one thread, CPU s, median of "
          f"{args.rounds} rounds\n")
    print("| metric | " + " | ".join(ways) + " | rows whole / engine | largest difference (of the largest value) |")
    print("|---|" + "---:|" * (len(ways) + 2))
    for name, fn in metrics.items():
        values = {w: run(fn) for w, run in ways.items()}  # warm-up (traces) and values
        spent: dict[str, list[float]] = {w: [] for w in ways}
        for r in range(args.rounds):
            for w in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
                t0 = time.process_time()
                ways[w](fn)
                spent[w].append(time.process_time() - t0)
        med = {w: statistics.median(v) for w, v in spent.items()}
        diff = max(float((values[w] - values["rows whole"]).abs().max() / values["rows whole"].abs().max())
                   for w in ways)
        print(f"| {name} | " + " | ".join(f"{med[w]:.2f}" for w in ways) +
              f" | {med['rows whole'] / med['engine']:.1f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
