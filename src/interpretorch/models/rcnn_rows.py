"""torchvision's two-stage detectors (Faster / Mask / Keypoint R-CNN) in eval mode, with the box branch
differentiated only on the rows that became detections.

torchvision's RPN detaches its proposals, and every op of ``RoIHeads``' box branch (``MultiScaleRoIAlign``, the box
head, the box predictor, the softmax, the box decoding and clipping) works on each proposal row by itself. So a
detection's box and score depend on the features only through its own proposal row. :func:`rcnn_detections` runs
the box branch over every proposal without a graph only to choose the detections (torchvision's own
post-processing: score threshold, small boxes removed, NMS per class, the top ``detections_per_img``) and keeps
each detection's proposal row; with gradients enabled it then runs the box branch again, with its graph, on those
rows only (at most ``detections_per_img`` per image instead of about a thousand). The detections are torchvision's
(same boxes, scores and labels; the recomputed rows equal the first pass up to float rounding), the mask and
keypoint branches run on them as torchvision runs them, and ``transform.postprocess`` resizes them to the input's
size; a backward pass from a detection touches its own row only. Without gradients the output is the first pass's,
the same numbers as torchvision's.

:func:`kept_rows_apply` says when this holds; anywhere else (training mode, a head or a forward of the user's own,
hooks inside the heads, which would see other rows) ``BatchedDetector`` calls the model as it is. The model is
only called, never changed.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.models.layers import global_hooks_active, has_hooks

__all__ = ["kept_rows_apply", "rcnn_detections"]


def kept_rows_apply(model: nn.Module) -> bool:
    """Whether ``model`` is a torchvision R-CNN in eval mode whose box branch is torchvision's own, row by row, with
    no hooks on it (then :func:`rcnn_detections` gives its outputs)."""
    try:
        from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
        from torchvision.models.detection.roi_heads import RoIHeads
        from torchvision.ops import MultiScaleRoIAlign
    except ImportError:
        return False
    if not isinstance(model, GeneralizedRCNN) or type(model).forward is not GeneralizedRCNN.forward:
        return False
    heads = getattr(model, "roi_heads", None)
    if not isinstance(heads, RoIHeads) or any(getattr(type(heads), f) is not getattr(RoIHeads, f)
                                              for f in ("forward", "postprocess_detections", "has_mask")):
        return False
    if (type(heads.box_roi_pool) is not MultiScaleRoIAlign or type(heads.box_head) not in (TwoMLPHead,
                                                                                           FastRCNNConvFCHead)
            or type(heads.box_predictor) is not FastRCNNPredictor):
        return False
    if model.training or any(m.training for m in heads.modules()):
        return False
    # a global hook or a torch function mode would see the box branch run twice (all rows, then the kept ones)
    return not (global_hooks_active() or has_hooks(model) or any(has_hooks(m) for m in heads.modules()))


def _box_rows(heads: nn.Module, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
              image_shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The box branch on these proposal rows: (boxes (N, C, 4) decoded, softmax scores (N, C))."""
    box_features = heads.box_head(heads.box_roi_pool(features, proposals, image_shapes))
    class_logits, box_regression = heads.box_predictor(box_features)
    return heads.box_coder.decode(box_regression, proposals), F.softmax(class_logits, -1)


def _choose(heads: nn.Module, boxes: torch.Tensor, scores: torch.Tensor,
            image_shape: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """torchvision's ``RoIHeads.postprocess_detections`` for one image, each detection's proposal row carried
    along: (rows, labels, boxes, scores) of the kept detections, in torchvision's order."""
    from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

    num_classes = scores.shape[-1]
    boxes = clip_boxes_to_image(boxes, image_shape)
    labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
    rows = torch.arange(scores.shape[0], device=scores.device).view(-1, 1).expand_as(scores)
    boxes, scores, labels, rows = boxes[:, 1:], scores[:, 1:], labels[:, 1:], rows[:, 1:]  # background dropped
    boxes, scores, labels, rows = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1), rows.reshape(-1)
    inds = torch.where(scores > heads.score_thresh)[0]
    boxes, scores, labels, rows = boxes[inds], scores[inds], labels[inds], rows[inds]
    keep = remove_small_boxes(boxes, min_size=1e-2)
    boxes, scores, labels, rows = boxes[keep], scores[keep], labels[keep], rows[keep]
    keep = batched_nms(boxes, scores, labels, heads.nms_thresh)[: heads.detections_per_img]
    return rows[keep], labels[keep], boxes[keep], scores[keep]


def _heads(heads: nn.Module, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
           image_shapes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
    """``RoIHeads.forward`` in eval mode, its box branch differentiated on the kept rows only."""
    from torchvision.models.detection.roi_heads import keypointrcnn_inference, maskrcnn_inference
    from torchvision.ops import clip_boxes_to_image

    with torch.no_grad():
        all_boxes, all_scores = _box_rows(heads, features, proposals, image_shapes)
        chosen = [_choose(heads, b, s, shape) for b, s, shape in
                  zip(all_boxes.split([len(p) for p in proposals]), all_scores.split([len(p) for p in proposals]),
                      image_shapes)]
    result = [{"boxes": boxes, "labels": labels, "scores": scores} for _, labels, boxes, scores in chosen]
    if torch.is_grad_enabled():
        kept = [p[rows] for p, (rows, *_) in zip(proposals, chosen)]
        n = [len(k) for k in kept]
        if sum(n):
            boxes, scores = _box_rows(heads, features, kept, image_shapes)
            for r, b, s, shape, (_, labels, *_) in zip(result, boxes.split(n), scores.split(n), image_shapes, chosen):
                pick = torch.arange(len(labels), device=labels.device)
                r["boxes"] = clip_boxes_to_image(b, shape)[pick, labels]
                r["scores"] = s[pick, labels]
        else:  # no detection: empty outputs still connected to the features (their gradient is zero), as torchvision's
            zero = sum(f.sum() for f in features.values()) * 0
            for r in result:
                r["boxes"], r["scores"] = r["boxes"] + zero, r["scores"] + zero
    if heads.has_mask():
        mask_proposals = [r["boxes"] for r in result]
        mask_logits = heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, mask_proposals,
                                                                               image_shapes)))
        for mask_prob, r in zip(maskrcnn_inference(mask_logits, [r["labels"] for r in result]), result):
            r["masks"] = mask_prob
    if heads.keypoint_roi_pool is not None and heads.keypoint_head is not None and heads.keypoint_predictor is not None:
        keypoint_proposals = [r["boxes"] for r in result]
        keypoint_logits = heads.keypoint_predictor(heads.keypoint_head(heads.keypoint_roi_pool(
            features, keypoint_proposals, image_shapes)))
        probs, kp_scores = keypointrcnn_inference(keypoint_logits, keypoint_proposals)
        for keypoint_prob, kps, r in zip(probs, kp_scores, result):
            r["keypoints"], r["keypoints_scores"] = keypoint_prob, kps
    return result


def rcnn_detections(model: nn.Module, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """``model(images)`` of an eval-mode torchvision R-CNN (see :func:`kept_rows_apply`), the box branch
    differentiated on the kept detections' rows only: torchvision's detections, one dict per image."""
    original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    batch, _ = model.transform(images, None)
    features = model.backbone(batch.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(batch, features, None)
    detections = _heads(model.roi_heads, features, proposals, batch.image_sizes)
    return model.transform.postprocess(detections, batch.image_sizes, original_sizes)
