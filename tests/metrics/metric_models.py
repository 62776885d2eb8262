"""Small models with known answers for the metric tests."""
from __future__ import annotations

import torch
from torch import nn


class LinearScore(nn.Module):
    """Two logits: ``[sum(w * x), 0]``, so class 0's logit is a known linear function of the pixels."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone()[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


class LinearClassifier(nn.Module):
    """Flatten + linear layer: ``K`` logits ``W x + b``; predictions move when pixels are replaced."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = shape[0] * shape[1] * shape[2]
        self.fc = nn.Linear(n, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, n, generator=g) / n ** 0.5)
            self.fc.bias.copy_(torch.randn(classes, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class Counting(nn.Module):
    """Wraps a model and counts the rows (images) that go through it, and the calls. It counts with a forward
    pre-hook, as a user would: a hooked model is run as it is (never as a folded or forward-only copy, which
    would hide the calls from the hook), so every row a metric sends is counted here."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.rows = 0
        self.calls = 0
        self.register_forward_pre_hook(Counting._count)

    def _count(self, args: tuple) -> None:
        self.rows += args[0].shape[0]
        self.calls += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
