"""What the project's small seeded training scripts share: a single-threaded seeded scope, one shuffled epoch,
accuracy, and the one train-and-save command line (``train_command``) every ``python -m ... --out PATH`` uses. Same config, same weights on the same platform (CPU kind and torch build)."""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import asdict
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def seeded_single_thread(seed: int) -> Iterator[None]:
    """Run the body on one thread with torch's global RNG seeded; thread count and RNG state restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                gen: torch.Generator, batch_size: int, sched: object | None = None,
                augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None) -> torch.Tensor:
    """One epoch of cross-entropy training over (x, y) shuffled by ``gen``; returns the last batch's loss."""
    model.train()
    n = x.shape[0]
    perm = torch.randperm(n, generator=gen)
    loss = torch.zeros(())
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        rows = x[idx] if augment is None else augment(x[idx], gen)
        loss = F.cross_entropy(model(rows), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
    return loss


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on (x, y)."""
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def finish(model: nn.Module) -> nn.Module:
    """The trained model in eval mode with no gradients left on its parameters."""
    model.eval()
    for p in model.parameters():
        p.grad = None
    return model


def train_command(prog: str, description: str, config_type: type, train_and_save: Callable[[Any, str], str],
                  argv: Sequence[str] | None = None) -> str:
    """The one train-and-save command line: ``--out PATH`` and one ``--field`` per field of the dataclass
    ``config_type`` (its defaults); ``train_and_save(config, out)`` trains, writes and returns the line printed."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--out", required=True, help="where to write the weights (.pt)")
    defaults = config_type()
    for name, value in asdict(defaults).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = ap.parse_args(None if argv is None else list(argv))
    config = config_type(**{k: getattr(args, k) for k in asdict(defaults)})
    line = train_and_save(config, args.out)
    print(line)
    return line
