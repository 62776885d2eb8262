"""Channels-last (B, h, w, C) layer outputs (timm's Swin stages) are laid out as (B, C, h, w) by the CAMs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch import explain
from interpretorch.capture import token_grid


class Stage(nn.Module):
    """A patch embedding followed by a per-cell MLP, output channels-last as in timm's Swin."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 24, 8, 8)
        self.mlp = nn.Linear(24, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.mlp(self.proj(x).permute(0, 2, 3, 1)))  # (B, h, w, C)


class NHWCNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stage = Stage()
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage(x).mean((1, 2)))


@pytest.mark.numerics
def test_gradcam_on_a_channels_last_stage_equals_the_hand_computed_map():
    torch.manual_seed(0)
    model = NHWCNet().eval()
    x = torch.rand(2, 3, 48, 64)  # 6 x 8 cells, 24 channels: neither dims 1-2 nor 2-3 are ambiguous
    ours = explain(model, x, "gradcam", target=[1, 3], layer="stage").maps
    acts = {}
    h = model.stage.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = model(x)
    h.remove()
    g, = torch.autograd.grad(out[0, 1] + out[1, 3], acts["a"])
    a, g = acts["a"].permute(0, 3, 1, 2), g.permute(0, 3, 1, 2)
    cam = F.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(48, 64), mode="bilinear", align_corners=False)[:, 0].detach()
    ours = ours / ours.flatten(1).amax(1)[:, None, None]
    cam = cam / cam.flatten(1).amax(1)[:, None, None]
    torch.testing.assert_close(ours, cam, atol=1e-4, rtol=1e-4)


def test_token_grid_keeps_channels_first_maps_and_permutes_channels_last_ones():
    layout = token_grid((224, 224))
    cnn = torch.zeros(1, 512, 7, 7)
    swin = torch.zeros(1, 7, 7, 768)
    assert layout(cnn) is cnn
    assert layout(swin).shape == (1, 768, 7, 7)
    assert layout(torch.zeros(1, 16, 224, 224)).shape == (1, 16, 224, 224)  # a full-resolution decoder map
