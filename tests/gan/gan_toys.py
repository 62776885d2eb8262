"""Toy generators and segmenters whose units draw known concepts (importable as package.module:factory)."""
from __future__ import annotations

import torch
from torch import nn


class HalfMaps(nn.Module):
    """z (B, 3) -> (B, 3, 8, 8): unit 0 is 1 + |z1| on the left half when z0 > 0 (else the right half), 0
    elsewhere; unit 1 is 1 on the top half; unit 2 is z2 everywhere."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        cols = torch.arange(8)
        left = (cols < 4).float().view(1, 1, 8).expand(b, 8, 8)
        side = torch.where(z[:, 0].view(b, 1, 1) > 0, left, 1 - left)
        u0 = side * (1 + z[:, 1].abs()).view(b, 1, 1)
        u1 = (torch.arange(8) < 4).float().view(1, 8, 1).expand(b, 8, 8)
        u2 = z[:, 2].view(b, 1, 1).expand(b, 8, 8)
        return torch.stack([u0, u1, u2], dim=1)


class ToyGenerator(nn.Module):
    """z (B, 3) -> a one-channel 8 x 8 image equal to unit 0 of layer ``feat`` (the other units draw nothing)."""

    z_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.maps = HalfMaps()
        self.feat = nn.Identity()
        self.out = nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.out.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.feat(self.maps(z)))


class ToySegmenter(nn.Module):
    """Class "A" where the image exceeds 0.5, "B" elsewhere: logits (B, 2, H, W)."""

    class_names = ["B", "A"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1)


class AbsentClassSegmenter(ToySegmenter):
    """ToySegmenter with a third class "C" that no pixel is ever segmented as."""

    class_names = ["B", "A", "C"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        two = super().forward(x)
        return torch.cat([two, torch.full_like(two[:, :1], -1e4)], dim=1)


class RandomGenerator(nn.Module):
    """A random small conv generator z (B, 8) -> (B, 3, 16, 16), for comparisons with a naive computation."""

    z_dim = 8

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(8, 6 * 4 * 4)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(6, 5, 4, 2, 1), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(5, 3, 4, 2, 1), nn.Tanh())
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up2(self.up1(self.fc(z).view(-1, 6, 4, 4)))


class RandomSegmenter(nn.Module):
    """A random 1x1 conv segmenter with 4 classes."""

    class_names = ["a", "b", "c", "d"]

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class NaNGenerator(ToyGenerator):
    """A generator whose images are NaN."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return super().forward(z) * float("nan")


def toy_generator() -> ToyGenerator:
    return ToyGenerator().eval()


def toy_segmenter() -> ToySegmenter:
    return ToySegmenter().eval()


def nan_generator() -> NaNGenerator:
    return NaNGenerator().eval()


def absent_class_segmenter() -> AbsentClassSegmenter:
    """The toy segmenter with a never-present class "C"."""
    return AbsentClassSegmenter()
