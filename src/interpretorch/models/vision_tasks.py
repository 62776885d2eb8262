"""Detectors, segmenters and embedding models of torchvision and Hugging Face as models of batched images whose
outputs the targets read (torchvision's list of detection dicts, ``{"out": logits}``, (B, D) embeddings), with the
CAM layer of each family.

torchvision's detectors (Faster / Mask R-CNN, RetinaNet, FCOS, SSD) take a list of [0, 1] images and normalise and
resize them inside (their ``transform``); ``BatchedDetector`` wraps one so that it takes a (B, 3, H, W) batch like
every other model and returns its list of ``{boxes, labels, scores}`` dicts (boxes in the input's pixels). The
wrapper holds the user's model, never changes it, and calls it in whatever mode the caller set. An eval-mode
Faster / Mask / Keypoint R-CNN with torchvision's own box branch runs through :mod:`interpretorch.models.rcnn_rows`:
the same detections, with the box branch's graph on the detections' own proposal rows only. Segmenters
(DeepLabV3, FCN, LR-ASPP) already take a normalised batch and return ``{"out": logits}``; they need no wrapper.
Hugging Face DETR, SegFormer, CLIP-vision and DINOv2 are wrapped so that they give the same structures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.models.rcnn_rows import kept_rows_apply, rcnn_detections

__all__ = ["BatchedDetector", "is_torchvision_detector", "batched_detector", "default_task_layer",
           "is_torchvision_segmenter", "HFDetector", "HFSegmenter", "HFEmbedder", "HF_TASKS"]


def is_torchvision_detector(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision detector (it takes a list of images and normalises them itself)."""
    return type(getattr(model, "transform", None)).__name__ == "GeneralizedRCNNTransform"


def is_torchvision_segmenter(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision segmentation model (DeepLabV3, FCN, LR-ASPP)."""
    return type(model).__name__ in ("DeepLabV3", "FCN", "LRASPP") and hasattr(model, "backbone")


class BatchedDetector(nn.Module):
    """A torchvision detector taking a (B, 3, H, W) batch of [0, 1] images: one dict of detections per row.

    For an eval-mode R-CNN (:func:`~interpretorch.models.rcnn_rows.kept_rows_apply`) the box branch is
    differentiated on the kept detections' proposal rows only (torchvision's detections, equal up to float
    rounding; a backward pass from one detection costs its own row, not every proposal's); any other detector, or
    an R-CNN in training mode, with heads of its own or hooks inside them, is called as it is."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        if not is_torchvision_detector(detector):
            raise TypeError(f"{type(detector).__name__} is not a torchvision detector (no GeneralizedRCNNTransform)")
        self.model = detector

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        if x.dim() != 4:
            raise ValueError(f"a batch of images (B, 3, H, W) is needed, got shape {tuple(x.shape)}")
        images = list(x.unbind(0))
        if kept_rows_apply(self.model):
            return rcnn_detections(self.model, images)
        return self.model(images)


def batched_detector(model: nn.Module) -> nn.Module:
    """``model`` wrapped in :class:`BatchedDetector` when it is a torchvision detector, else ``model`` itself."""
    return BatchedDetector(model) if is_torchvision_detector(model) else model


def default_task_layer(model: nn.Module, prefix: str = "") -> str | None:
    """The CAM layer of a torchvision detector or segmenter: the backbone's last stage (its deepest feature map,
    the level pytorch-grad-cam's tutorials explain), or None for another model."""
    inner = model.model if isinstance(model, BatchedDetector) else model
    if isinstance(model, BatchedDetector):
        prefix = prefix + "model."
    backbone = getattr(inner, "backbone", None)
    if backbone is None:
        return None
    body = getattr(backbone, "body", None)  # BackboneWithFPN: the FPN's input stages
    if body is not None:
        last = list(dict(body.named_children()))[-1]
        return f"{prefix}backbone.body.{last}"
    features = getattr(backbone, "features", None)  # SSD's feature extractors: the deepest stage of the trunk
    if isinstance(features, nn.Sequential) and len(features):
        return f"{prefix}backbone.features.{len(features) - 1}"
    if is_torchvision_segmenter(inner):
        last = list(dict(backbone.named_children()))[-1]
        return f"{prefix}backbone.{last}"
    return None


class HFDetector(nn.Module):
    """A Hugging Face DETR-style detector (``logits`` (B, Q, C + 1) with the last class "no object", ``pred_boxes``
    (B, Q, 4) normalised cx, cy, w, h) as torchvision's output: per image the queries whose best class's
    probability exceeds ``score_threshold``, boxes xyxy in the input's pixels, scores differentiable."""

    def __init__(self, model: nn.Module, score_threshold: float = 0.5) -> None:
        super().__init__()
        self.model = model
        self.score_threshold = float(score_threshold)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        out = self.model(pixel_values=x)
        prob = out.logits.softmax(-1)[..., :-1]
        scores, labels = prob.max(-1)
        h, w = x.shape[-2:]
        cx, cy, bw, bh = out.pred_boxes.unbind(-1)
        boxes = torch.stack([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], dim=-1)
        rows = []
        for i in range(x.shape[0]):
            keep = scores[i].detach() > self.score_threshold
            rows.append({"boxes": boxes[i][keep], "labels": labels[i][keep], "scores": scores[i][keep]})
        return rows


class HFSegmenter(nn.Module):
    """A Hugging Face semantic segmenter (SegFormer: ``logits`` at 1/4 of the input) as torchvision's output,
    ``{"out": logits}`` resized bilinearly to the input's size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(pixel_values=x).logits
        return {"out": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


class HFEmbedder(nn.Module):
    """A Hugging Face image encoder (CLIP vision, DINOv2) as a (B, D) embedding: CLIP's projected
    ``image_embeds`` when the model has them, else ``pooler_output`` (DINOv2: the normalised class token)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        emb = getattr(out, "image_embeds", None)
        return emb if emb is not None else out.pooler_output


# Hugging Face model types by task: the Auto class that builds them and the wrapper that parses their output
HF_TASKS = {"detr": ("AutoModelForObjectDetection", HFDetector), "conditional_detr":
            ("AutoModelForObjectDetection", HFDetector), "segformer": ("AutoModelForSemanticSegmentation", HFSegmenter),
            "clip_vision_model": ("CLIPVisionModelWithProjection", HFEmbedder),
            "clip": ("CLIPVisionModelWithProjection", HFEmbedder), "dinov2": ("AutoModel", HFEmbedder)}
