"""Train a small CNN on a probe set (its scene, and the shape of its largest object), to dissect it.

``python -m interpretorch.dissect.train --data DIR --out probe_cnn.pt`` writes the weights (a state dict);
``interpretorch dissect --model interpretorch.dissect.train:ProbeCNN --weights probe_cnn.pt --mean 0.5,0.5,0.5
--std 0.25,0.25,0.25 --layers conv1.2,conv4.2`` dissects them (the normalisation it was trained with).
Training is seeded and deterministic on the CPU for a given torch build.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.dissect.broden import BrodenDataset, collate

PROBE_MEAN = (0.5, 0.5, 0.5)
PROBE_STD = (0.25, 0.25, 0.25)


class ProbeCNN(nn.Module):
    """Four conv-BN-ReLU blocks (max-pooling between them), global average pooling and a linear head.

    Dissect ``conv1.2`` .. ``conv4.2`` (the ReLU outputs, at 1, 1/2, 1/4, 1/8 of the input size). ``forward``
    returns the scene logits followed by the logits of the shape of the largest object, concatenated.
    """

    def __init__(self, scenes: int = 5, shapes: int = 4, width: int = 16,
                 seed: int | None = 0) -> None:
        super().__init__()
        if seed is not None:
            state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        w = width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.conv1, self.conv2, self.conv3, self.conv4 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w), \
            block(4 * w, 4 * w)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(4 * w, scenes + shapes)
        self.sizes = (scenes, shapes)
        if seed is not None:
            torch.random.set_rng_state(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv2(self.pool(x))
        x = self.conv3(self.pool(x))
        x = self.conv4(self.pool(x))
        return self.head(x.mean(dim=(2, 3)))


# Dissect these: the ReLU output of each block.
PROBE_LAYERS = ("conv1.2", "conv2.2", "conv3.2", "conv4.2")


def targets(dataset: BrodenDataset, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Scene index (B,) and the shape index of the largest object (B,) of the probe images in a batch."""
    from interpretorch.dissect.probe import SCENES, SHAPES

    info = dataset.info
    num = {(info.categories[c], info.label_names[n]): n for n, c in info.label_category.items()}
    scene_of = {num["scene", s]: i for i, s in enumerate(SCENES)}
    scene = torch.tensor([scene_of[int(row[row >= 0][0])] for row in batch["image_labels"]])
    pix = batch["pixel"].flatten(1)
    area = torch.stack([(pix == num["object", s]).sum(dim=1) for s in SHAPES], dim=1)
    return scene, area.argmax(dim=1)


def snapshot_name(step: int) -> str:
    """The file name of the training snapshot taken after ``step`` optimizer steps."""
    return f"step{step:06d}.pt"


def train_probe_cnn(data: str | Path, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-2,
                    seed: int = 0, width: int = 16, log: bool = False, snapshots: Sequence[int] = (),
                    snapshot_dir: str | Path | None = None) -> ProbeCNN:
    """Train a ProbeCNN on the probe set in ``data`` (scene + shape of the largest object); returns it in eval mode.

    Single-threaded and seeded (AdamW with a one-cycle schedule, random left-right flips), so the same data
    and seed give the same weights on one platform; the global RNG and thread count are restored afterwards.
    ``snapshots``: optimizer steps (0 = before the first) after which the state dict is saved to
    ``snapshot_dir/step000123.pt``, for ``interpretorch dissect --checkpoints``.
    """
    wanted = sorted({int(s) for s in snapshots})
    if wanted and snapshot_dir is None:
        raise ValueError("snapshots need a snapshot_dir")
    if wanted and wanted[0] < 0:
        raise ValueError(f"snapshot steps must be >= 0, got {wanted[0]}")
    if snapshot_dir is not None:
        Path(snapshot_dir).mkdir(parents=True, exist_ok=True)

    def snapshot(model: ProbeCNN, step: int) -> None:
        if step in wanted:
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                       Path(snapshot_dir) / snapshot_name(step))

    ds = BrodenDataset(data, mean=PROBE_MEAN, std=PROBE_STD)
    items = collate([ds[i] for i in range(len(ds))])  # a probe set is small: keep it in memory
    scene, shape = targets(ds, items)
    x = items["image"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ProbeCNN(width=width, seed=seed)
            opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=1e-4)
            steps = epochs * -(-len(x) // batch_size)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
            g = torch.Generator().manual_seed(seed)
            n_s = model.sizes[0]
            if wanted and wanted[-1] > steps:
                raise ValueError(f"snapshot step {wanted[-1]} is past the last step ({steps})")
            step = 0
            snapshot(model, step)
            for epoch in range(epochs):
                model.train()
                order = torch.randperm(len(x), generator=g)
                total, correct = 0.0, 0
                for s in range(0, len(x), batch_size):
                    idx = order[s:s + batch_size]
                    xb = x[idx]
                    if torch.rand((), generator=g) < 0.5:
                        xb = xb.flip(3)  # left-right flips keep every label
                    out = model(xb)
                    loss = F.cross_entropy(out[:, :n_s], scene[idx]) + F.cross_entropy(out[:, n_s:], shape[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    snapshot(model, step)
                    total += float(loss.detach()) * len(idx)
                    correct += int((out[:, n_s:].argmax(1) == shape[idx]).sum())
                if log:
                    print(f"epoch {epoch + 1}: loss {total / len(x):.3f}, shape accuracy {correct / len(x):.3f}",
                          flush=True)
            model.eval()
            for p in model.parameters():
                p.grad = None
            return model
    finally:
        torch.set_num_threads(threads)


def evaluate(model: ProbeCNN, data: str | Path) -> dict:
    """Scene and largest-object-shape accuracy of ``model`` on the probe set in ``data``."""
    ds = BrodenDataset(data, mean=PROBE_MEAN, std=PROBE_STD)
    items = collate([ds[i] for i in range(len(ds))])
    scene, shape = targets(ds, items)
    with torch.no_grad():
        out = model.eval()(items["image"])
    n_s = model.sizes[0]
    return {"scene_accuracy": float((out[:, :n_s].argmax(1) == scene).float().mean()),
            "shape_accuracy": float((out[:, n_s:].argmax(1) == shape).float().mean())}


def main(argv: list[str] | None = None) -> int:
    """Command line: train on a probe set and save the state dict."""
    p = argparse.ArgumentParser(description="Train a ProbeCNN on a probe set and save its weights")
    p.add_argument("--data", required=True, help="probe set folder (interpretorch make-probe)")
    p.add_argument("--out", required=True, help="weights file to write")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--snapshots", default="",
                   help="comma-separated optimizer steps (0: before training) at which to save the weights")
    p.add_argument("--snapshot-dir", default=None, help="folder for the snapshots (default: next to --out)")
    args = p.parse_args(argv)
    steps = [int(s) for s in args.snapshots.split(",") if s.strip()]
    where = args.snapshot_dir or str(Path(args.out).with_suffix("")) + "_snapshots"
    t0 = time.perf_counter()
    model = train_probe_cnn(args.data, epochs=args.epochs, seed=args.seed, log=True, snapshots=steps,
                            snapshot_dir=where if steps else None)
    torch.save(model.state_dict(), args.out)
    print(f"trained in {time.perf_counter() - t0:.1f} s; {evaluate(model, args.data)}; weights in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
