"""Tiny random-weight models with the output structures of detectors, segmenters, embedding models and regression
heads (torchvision / Hugging Face shapes), for the target-object tests. ``package.module:factory`` loadable."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class Backbone(nn.Module):
    """conv-bn-relu-conv-relu: a CAM layer (``features``) at 1/2 resolution."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class TinyDetector(nn.Module):
    """A detector-shaped model: one candidate box per cell of a coarse grid, scored per class with a sigmoid;
    returns torchvision's list of dicts (boxes xyxy pixels, labels, scores), the boxes regressed from the features
    (differentiable), the top ``max_det`` candidates above ``min_score`` kept."""

    def __init__(self, num_classes: int = 3, width: int = 8, cell: int = 8, max_det: int = 6,
                 min_score: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = Backbone(width)
        self.pool = nn.AvgPool2d(cell // 2)
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.reg = nn.Conv2d(width, 4, 1)
        self.cell, self.max_det, self.min_score = cell, max_det, min_score

    def forward(self, x: torch.Tensor) -> list[dict]:
        f = self.pool(self.backbone(x))
        logits = self.cls(f)  # (B, K, gh, gw)
        deltas = torch.tanh(self.reg(f)) * 0.5
        b, k, gh, gw = logits.shape
        ys, xs = torch.meshgrid(torch.arange(gh, dtype=x.dtype, device=x.device),
                                torch.arange(gw, dtype=x.dtype, device=x.device), indexing="ij")
        c = self.cell
        cx, cy = (xs + 0.5) * c, (ys + 0.5) * c
        out = []
        for i in range(b):
            d = deltas[i]
            boxes = torch.stack([cx - c * (1 + d[0]), cy - c * (1 + d[1]), cx + c * (1 + d[2]),
                                 cy + c * (1 + d[3])], dim=-1).reshape(-1, 4)
            prob = torch.sigmoid(logits[i]).reshape(k, -1)  # (K, cells)
            scores, labels = prob.max(0)
            order = scores.detach().argsort(descending=True)[: self.max_det]
            order = order[scores.detach()[order] > self.min_score]
            out.append({"boxes": boxes[order], "labels": labels[order], "scores": scores[order]})
        return out


class CountingDetector(TinyDetector):
    """A TinyDetector recording the rows of each forward call (``CountingDetector.calls``; clear it per test)."""

    calls: list = []

    def forward(self, x):
        CountingDetector.calls.append(x.shape[0])
        return super().forward(x)


class TinySegmenter(nn.Module):
    """A segmenter-shaped model: (B, C, H, W) logits at input resolution (``out="tensor"``), a dict with 'out'
    (torchvision) or a ModelOutput-like object with ``logits`` at 1/2 resolution (``out="hf"``)."""

    def __init__(self, num_classes: int = 3, width: int = 8, out: str = "dict", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = Backbone(width)
        self.head = nn.Conv2d(width, num_classes, 1)
        self.out = out

    def forward(self, x: torch.Tensor):
        logits = self.head(self.backbone(x))
        if self.out == "hf":
            return HFOutput(logits=logits)
        up = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
        return up if self.out == "tensor" else {"out": up}


class HFOutput(OrderedDict):
    """A stand-in for transformers' ModelOutput: a dict whose keys are also attributes."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class TinyEmbedder(nn.Module):
    """An embedding model: (B, D) (``out="tensor"``) or an output with ``pooler_output`` (``out="hf"``)."""

    def __init__(self, dim: int = 6, width: int = 8, out: str = "tensor", seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = Backbone(width)
        self.proj = nn.Linear(width, dim)
        self.out = out

    def forward(self, x: torch.Tensor):
        e = self.proj(self.backbone(x).mean((2, 3)))
        return HFOutput(pooler_output=e) if self.out == "hf" else e


class TinyRegressor(nn.Module):
    """A (B, K) regression head on the backbone's pooled features."""

    def __init__(self, outputs: int = 2, width: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = Backbone(width)
        self.fc = nn.Linear(width, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x).mean((2, 3)))


def detector() -> nn.Module:
    """Factory for ``--model target_models:detector``."""
    return TinyDetector().eval()


def segmenter() -> nn.Module:
    """Factory for ``--model target_models:segmenter``."""
    return TinySegmenter().eval()


def embedder() -> nn.Module:
    """Factory for ``--model target_models:embedder``."""
    return TinyEmbedder().eval()
