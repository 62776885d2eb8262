"""What the project's small seeded training scripts share: a single-threaded seeded scope, one shuffled epoch,
and accuracy. Same config, same weights on the same platform (CPU kind and torch build)."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

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
