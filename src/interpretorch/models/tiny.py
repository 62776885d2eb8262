"""Small CNNs for tests, demos and the synthetic datasets."""
from __future__ import annotations

import torch
from torch import nn

from interpretorch.models.layers import StagedModule


class TinyCNN(StagedModule):
    """Conv-BN-ReLU(inplace) x3 with pooling, global average pooling and a linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 8, seed: int | None = 0) -> None:
        super().__init__()
        if seed is not None:
            gen_state = torch.random.get_rng_state()
            torch.manual_seed(seed)
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(4 * w, num_classes)
        if seed is not None:
            # Non-trivial BatchNorm statistics so eval-mode BN is not the identity in tests.
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.data.uniform_(0.5, 1.5)
                    m.bias.data.uniform_(-0.2, 0.2)
            torch.random.set_rng_state(gen_state)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered (name, module) pairs whose composition is ``forward``."""
        return [("features", self.features), ("pool", self.pool), ("flatten", self.flatten), ("fc", self.fc)]
