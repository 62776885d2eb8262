"""Targets as objects: what one row of a model's output is explained by, for classifiers, detectors, segmenters,
embedding models and regression heads.

A target object gives one scalar per output row. It is handed to every method, metric and sanity check as
``target=`` (one object for all images, or a list with one per image) and turned into scores in one place,
:func:`interpretorch.core.targets.target_scores`.

Routing. Methods put rows (images x perturbations, interpolation steps, noisy copies) through the model in
chunks. :func:`interpretorch.core.targets.check_target` binds target objects to the images of the call
(:class:`BoundTargets`); on the unperturbed images :func:`~interpretorch.core.targets.target_indices` returns
the *image index* of each row (where a class target returns its class), and every method already carries those
indices to the rows it builds from each image (``idx[image_of_row]``, or ``split_target(target, images)``), so a
per-image target (the box of image 3) scores exactly the rows made from image 3 with no code in the method.
The same call records, once per image, what a target reads from the unperturbed output (the predicted mask of a
segmentation class, the box of a chosen detection), so perturbed rows are scored against the unperturbed
prediction, as pytorch-grad-cam does with the mask and boxes it is given.

This module imports nothing of interpretorch but torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["TargetObject", "ClassTarget", "DetectionTarget", "SegmentationTarget", "SimilarityTarget",
           "RegressionTarget", "FunctionTarget", "BoundTargets", "KINDS", "detection_rows",
           "segmentation_logits", "embeddings", "box_iou", "output_rows", "infer_task"]

KINDS = ("class", "detection", "segmentation", "similarity", "regression", "function")


# ----------------------------------------------------------------------------------------------- outputs

def _field(outputs: object, *names: str) -> object:
    """The first of ``names`` present in a dict / ModelOutput (key or attribute), else None."""
    for n in names:
        if isinstance(outputs, dict) and n in outputs and outputs[n] is not None:
            return outputs[n]
        v = getattr(outputs, n, None) if not isinstance(outputs, (torch.Tensor, list, tuple)) else None
        if v is not None:
            return v
    return None


def detection_rows(outputs: object) -> list[dict]:
    """The torchvision-style detections of each row: a list of dicts with ``boxes`` (N, 4) xyxy in pixels,
    ``labels`` (N,) and ``scores`` (N,); raises a clear error for any other output."""
    if isinstance(outputs, (list, tuple)) and all(isinstance(o, dict) for o in outputs):
        for o in outputs:
            missing = [k for k in ("boxes", "labels", "scores") if k not in o]
            if missing:
                raise ValueError(f"a detection output row is a dict with boxes, labels and scores; this one lacks "
                                 f"{', '.join(missing)} (keys: {', '.join(map(str, o))})")
        return list(outputs)
    raise TypeError(f"a detection target needs the model to return one dict per image with boxes (N, 4), labels "
                    f"and scores (torchvision's detection output), got a {type(outputs).__name__}; wrap the model "
                    "so that it returns that, or pass a callable target")


def segmentation_logits(outputs: object) -> torch.Tensor:
    """The (B, C, h, w) class logits of a segmenter's output: a tensor, a dict with ``out`` (torchvision) or an
    object / dict with ``logits`` (Hugging Face; SegFormer's are at 1/4 of the input resolution)."""
    t = outputs if isinstance(outputs, torch.Tensor) else _field(outputs, "out", "logits")
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(outputs).__name__
        raise TypeError(f"a segmentation target needs (B, num_classes, H, W) logits (a tensor, a dict with 'out' or "
                        f"an output with .logits), got {shape}")
    return t


def embeddings(outputs: object) -> torch.Tensor:
    """The (B, D) embeddings of an embedding model's output: a 2-D tensor, or a dict / ModelOutput with
    ``image_embeds``, ``pooler_output``, ``embeds`` or ``embeddings``."""
    t = outputs if isinstance(outputs, torch.Tensor) else _field(outputs, "image_embeds", "pooler_output",
                                                                 "embeds", "embeddings")
    if isinstance(t, torch.Tensor) and t.dim() > 2:
        t = t.flatten(1)
    if not isinstance(t, torch.Tensor) or t.dim() != 2:
        raise TypeError(f"a similarity target needs (B, D) embeddings (a tensor, or an output with image_embeds / "
                        f"pooler_output), got a {type(outputs).__name__}")
    return t


def output_rows(outputs: object) -> int:
    """How many rows (images) ``outputs`` hold: the batch dimension of a tensor / dict of tensors, or the length
    of a list of per-image dicts."""
    if isinstance(outputs, torch.Tensor):
        return int(outputs.shape[0])
    if isinstance(outputs, (list, tuple)) and outputs and all(isinstance(o, dict) for o in outputs):
        return len(outputs)
    if isinstance(outputs, (list, tuple)) and not outputs:
        return 0
    if isinstance(outputs, dict) or hasattr(outputs, "keys"):
        for v in outputs.values():
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
    if isinstance(outputs, (list, tuple)):
        for v in outputs:
            if isinstance(v, torch.Tensor) and v.dim() > 0:
                return int(v.shape[0])
    raise TypeError(f"cannot tell how many rows a {type(outputs).__name__} output holds")


def infer_task(outputs: object, reference: bool = False) -> str:
    """The kind of model an output comes from: "detection" (a list of dicts with boxes), "segmentation" (4-D
    logits, or a dict with 'out' / 4-D 'logits'), "similarity" (2-D embeddings when ``reference`` is given, or an
    output with image_embeds / pooler_output), else "class"."""
    if isinstance(outputs, (list, tuple)) and outputs and all(isinstance(o, dict) and "boxes" in o for o in outputs):
        return "detection"
    if isinstance(outputs, torch.Tensor):
        if outputs.dim() == 4:
            return "segmentation"
        return "similarity" if reference else "class"
    seg = _field(outputs, "out", "logits")
    if isinstance(seg, torch.Tensor) and seg.dim() == 4:
        return "segmentation"
    if _field(outputs, "image_embeds", "pooler_output") is not None:
        return "similarity"
    if isinstance(seg, torch.Tensor) and seg.dim() == 2:
        return "similarity" if reference else "class"
    raise TypeError(f"cannot tell the task from a {type(outputs).__name__} output; say it (--task)")


def _zero(ref: torch.Tensor | None, device: torch.device | None = None) -> torch.Tensor:
    """A 0 connected to the graph of ``ref`` (so a row without a match still back-propagates, to zeros)."""
    if ref is None:
        return torch.zeros((), device=device)
    return ref.sum() * 0


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of boxes (N, 4) and (M, 4) in xyxy: (N, M), differentiable, as torchvision's."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp_min(torch.finfo(inter.dtype).tiny if inter.is_floating_point() else 1e-12)


# ----------------------------------------------------------------------------------------------- targets

class TargetObject:
    """A scalar per row of the model's output. Subclasses set ``kind`` and implement ``score_row``; those that
    read the unperturbed output (a predicted mask, a chosen detection) implement ``prepare``."""

    kind: str = "function"

    def prepare(self, outputs: object, row: int) -> Any:
        """What this target keeps from the unperturbed output of image row ``row`` (None: nothing)."""
        return None

    def score_row(self, outputs: object, row: int, state: Any) -> torch.Tensor:
        """The scalar of output row ``row`` (``state``: what ``prepare`` kept for the row's image)."""
        raise NotImplementedError

    def score_rows(self, outputs: object, rows: Sequence[int], states: Sequence[Any]) -> torch.Tensor:
        """Scalars of output ``rows`` (this object is the target of each of them), stacked (R,)."""
        return torch.stack([self.score_row(outputs, r, s) for r, s in zip(rows, states)])

    def describe(self) -> dict:
        """A JSON-ready description (kind and settings), what results and reports show."""
        return {"kind": self.kind}


@dataclass(frozen=True, eq=False)
class ClassTarget(TargetObject):
    """A class of a classifier: ``"top1"``, an int, or one int per image (exactly today's int / list targets:
    ``check_target`` turns it into them, so the maps are the same)."""

    index: Any = "top1"
    kind = "class"

    def describe(self) -> dict:
        """Kind and class."""
        i = self.index
        return {"kind": "class", "class": i if isinstance(i, (str, int)) else list(map(int, i))}


@dataclass(frozen=True, eq=False)
class RegressionTarget(TargetObject):
    """Output ``index`` of a (B, K) regression head (K = 1: ``index=0``)."""

    index: int = 0
    kind = "regression"

    def score_rows(self, outputs: object, rows: Sequence[int], states: Sequence[Any]) -> torch.Tensor:
        """``outputs[rows, index]``."""
        t = outputs if isinstance(outputs, torch.Tensor) else _field(outputs, "logits", "predictions")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"a regression target needs (B, K) outputs, got a {type(outputs).__name__}")
        t = t.reshape(t.shape[0], -1)
        if not 0 <= self.index < t.shape[1]:
            raise ValueError(f"regression output index {self.index} is out of range [0, {t.shape[1]})")
        return t[torch.as_tensor(list(rows), device=t.device), self.index]

    def describe(self) -> dict:
        """Kind and output index."""
        return {"kind": "regression", "index": self.index}


MATCHES = ("best", "all")


@dataclass(frozen=True, eq=False)
class DetectionTarget(TargetObject):
    """One or more reference boxes of a detector (the score of the predicted boxes that match them), or the
    detection ``index`` of the unperturbed image.

    ``boxes`` (K, 4) or (4,) xyxy in pixels with ``labels`` (K,) or one int. A row scores, for each reference box,

    - ``match="best"`` (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``, the default): the predicted box of
      highest IoU with it, of any label; when that IoU > ``iou_threshold`` and its label equals the reference's,
      IoU + its score, else 0;
    - ``match="all"``: the sum of IoU + score over every predicted box of the reference's label with IoU >
      ``iou_threshold``;

    summed over the reference boxes. ``index=j`` takes the box and label of detection j of the unperturbed image
    (so perturbed rows are matched to it as above; on the unperturbed image itself it matches with IoU 1). A row
    with no matching box scores 0, connected to the graph (its gradient is zero, not an error).
    """

    boxes: Any = None
    labels: Any = None
    index: int | None = None
    iou_threshold: float = 0.5
    match: str = "best"
    kind = "detection"

    def __post_init__(self) -> None:
        if self.match not in MATCHES:
            raise ValueError(f"match must be one of {MATCHES}, got {self.match!r}")
        if (self.index is None) == (self.boxes is None):
            raise ValueError("a detection target takes reference boxes= and labels=, or a detection index=, "
                             "exactly one of the two")
        if self.index is not None:
            if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
                raise ValueError(f"index must be a detection index >= 0, got {self.index!r}")
            return
        b = torch.as_tensor(self.boxes, dtype=torch.float32).detach()
        b = b.reshape(1, 4) if b.dim() == 1 else b
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes must be (4,) or (K, 4) xyxy, got shape {tuple(b.shape)}")
        if self.labels is None:
            raise ValueError("a detection target with boxes needs their labels (one int, or one per box)")
        lab = torch.as_tensor(self.labels, dtype=torch.long).detach().reshape(-1)
        if lab.numel() == 1 and b.shape[0] > 1:
            lab = lab.expand(b.shape[0])
        if lab.numel() != b.shape[0]:
            raise ValueError(f"got {lab.numel()} labels for {b.shape[0]} boxes")
        object.__setattr__(self, "boxes", b)
        object.__setattr__(self, "labels", lab.clone())

    def prepare(self, outputs: object, row: int) -> Any:
        """For ``index=j``: the box and label of detection j on the unperturbed image."""
        if self.index is None:
            return None
        det = detection_rows(outputs)[row]
        n = int(det["boxes"].shape[0])
        if self.index >= n:
            raise ValueError(f"detection index {self.index} is out of range: the image has {n} detections")
        return det["boxes"][self.index].detach().reshape(1, 4).float(), det["labels"][self.index].reshape(1).long()

    def score_row(self, outputs: object, row: int, state: Any) -> torch.Tensor:
        """The matched boxes' IoU + score, summed over the reference boxes (0 without a match)."""
        det = detection_rows(outputs)[row]
        boxes, labels, scores = det["boxes"], det["labels"], det["scores"]
        ref_boxes, ref_labels = state if self.index is not None else (self.boxes, self.labels)
        total = _zero(scores) + _zero(boxes)
        if boxes.shape[0] == 0:
            return total
        ref_boxes = ref_boxes.to(device=boxes.device, dtype=boxes.dtype)
        ref_labels = ref_labels.to(labels.device)
        ious = box_iou(ref_boxes, boxes)  # (K, N)
        if self.match == "best":
            fixed = ious.detach()
            best = fixed.argmax(dim=1)
            lab = labels.detach()
            for k in range(ref_boxes.shape[0]):
                j = int(best[k])
                if float(fixed[k, j]) > self.iou_threshold and int(lab[j]) == int(ref_labels[k]):
                    total = total + ious[k, j] + scores[j]
            return total
        keep = (ious.detach() > self.iou_threshold) & (labels[None, :] == ref_labels[:, None])
        return total + ((ious + scores[None, :].to(ious.dtype)) * keep).sum()

    def describe(self) -> dict:
        """Kind, reference boxes / labels or index, threshold and match rule."""
        d: dict = {"kind": "detection", "iou_threshold": self.iou_threshold, "match": self.match}
        if self.index is not None:
            d["index"] = self.index
        else:
            d["boxes"] = [[round(float(v), 2) for v in b] for b in self.boxes]
            d["labels"] = [int(v) for v in self.labels]
        return d


REDUCES = ("sum", "mean")


@dataclass(frozen=True, eq=False)
class SegmentationTarget(TargetObject):
    """Class ``category``'s logits over a pixel region of a segmenter's output, summed (``reduce="sum"``, as
    pytorch-grad-cam's ``SemanticSegmentationTarget``) or averaged (``"mean"``).

    ``mask`` (H, W) bool; None: the model's predicted mask of that class on the unperturbed image
    (argmax over classes == ``category``, at the logits' resolution). A mask whose size differs from the logits'
    (SegFormer's logits are at 1/4 of the input) is resized to the logits: by area (a logit pixel is in the
    region when at least half of it is) when shrinking, nearest when growing. An empty region scores 0.
    """

    category: int = 0
    mask: Any = None
    reduce: str = "sum"
    kind = "segmentation"

    def __post_init__(self) -> None:
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}, got {self.reduce!r}")
        if isinstance(self.category, bool) or not isinstance(self.category, int) or self.category < 0:
            raise ValueError(f"category must be a class index >= 0, got {self.category!r}")
        if self.mask is not None:
            m = torch.as_tensor(self.mask).detach()
            if m.dim() == 3 and m.shape[0] == 1:
                m = m[0]
            if m.dim() != 2:
                raise ValueError(f"mask must be (H, W), got shape {tuple(m.shape)}")
            object.__setattr__(self, "mask", m.bool())

    def prepare(self, outputs: object, row: int) -> Any:
        """The predicted mask of ``category`` on the unperturbed image (when no mask was given)."""
        if self.mask is not None:
            return None
        logits = segmentation_logits(outputs)
        self._check_class(logits)
        return (logits[row].detach().argmax(0) == self.category)

    def _check_class(self, logits: torch.Tensor) -> None:
        if self.category >= logits.shape[1]:
            raise ValueError(f"segmentation class {self.category} is out of range: the model has "
                             f"{logits.shape[1]} classes")

    def region(self, size: tuple[int, int], state: Any, device: torch.device) -> torch.Tensor:
        """The (h, w) bool region at the logits' size ``size``."""
        m = self.mask if state is None else state
        m = m.to(device)
        if tuple(m.shape) == tuple(size):
            return m
        mf = m[None, None].float()
        if m.shape[0] >= size[0] and m.shape[1] >= size[1]:
            return F.adaptive_avg_pool2d(mf, size)[0, 0] >= 0.5
        return F.interpolate(mf, size=size, mode="nearest")[0, 0] > 0.5

    def score_rows(self, outputs: object, rows: Sequence[int], states: Sequence[Any]) -> torch.Tensor:
        """Sum (or mean) of class ``category``'s logits over each row's region."""
        logits = segmentation_logits(outputs)
        self._check_class(logits)
        size = tuple(logits.shape[2:])
        if self.mask is not None:
            regions = self.region(size, None, logits.device)[None].expand(len(rows), *size)
        else:
            regions = torch.stack([self.region(size, s, logits.device) for s in states])
        idx = torch.as_tensor(list(rows), device=logits.device)
        vals = logits[idx, self.category] * regions.to(logits.dtype)
        total = vals.flatten(1).sum(1)
        if self.reduce == "mean":
            total = total / regions.flatten(1).sum(1).clamp_min(1).to(total.dtype)
        return total

    def describe(self) -> dict:
        """Kind, class, region and reduction."""
        return {"kind": "segmentation", "category": self.category, "reduce": self.reduce,
                "mask": "predicted" if self.mask is None else f"given ({int(self.mask.sum())} pixels)"}


@dataclass(frozen=True, eq=False)
class SimilarityTarget(TargetObject):
    """Cosine similarity of each row's embedding to ``reference`` (a (D,) or (1, D) embedding);
    :meth:`from_image` computes the reference once from another image."""

    reference: Any = None
    kind = "similarity"

    def __post_init__(self) -> None:
        if not isinstance(self.reference, torch.Tensor):
            raise TypeError("reference must be an embedding tensor (D,) or (1, D); use "
                            "SimilarityTarget.from_image(model, image) for another image's embedding")
        r = self.reference.detach().reshape(-1)
        object.__setattr__(self, "reference", r)

    @classmethod
    def from_image(cls, model: Callable[[torch.Tensor], object], image: torch.Tensor) -> "SimilarityTarget":
        """The target of similarity to ``image``'s embedding (C, H, W) or (1, C, H, W), computed once without
        gradients; the model is left as it was (eval mode for the pass, its mode restored)."""
        x = image[None] if image.dim() == 3 else image
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"the reference image must be (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
        training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        try:
            with torch.no_grad():
                p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
                out = model(x.to(p.device) if p is not None else x)
        finally:
            if training:
                model.train()
        return cls(embeddings(out)[0])

    def score_rows(self, outputs: object, rows: Sequence[int], states: Sequence[Any]) -> torch.Tensor:
        """Cosine similarity of each row's embedding to the reference."""
        e = embeddings(outputs)
        if e.shape[1] != self.reference.numel():
            raise ValueError(f"embeddings have {e.shape[1]} dimensions, the reference {self.reference.numel()}")
        idx = torch.as_tensor(list(rows), device=e.device)
        return F.cosine_similarity(e[idx], self.reference.to(e.device, e.dtype)[None], dim=1)

    def describe(self) -> dict:
        """Kind and the reference's size."""
        return {"kind": "similarity", "dim": int(self.reference.numel())}


@dataclass(frozen=True, eq=False)
class FunctionTarget(TargetObject):
    """A user function ``fn(outputs, row) -> scalar`` of one output row, routed like every target object (a plain
    callable ``outputs -> (B,)`` target keeps working and is not routed)."""

    fn: Any = None
    name: str = "function"
    kind = "function"

    def score_row(self, outputs: object, row: int, state: Any) -> torch.Tensor:
        """``fn(outputs, row)`` as a 0-d tensor."""
        v = self.fn(outputs, row)
        if not isinstance(v, torch.Tensor) or v.numel() != 1:
            raise ValueError(f"a FunctionTarget must return one scalar tensor per row, got {type(v).__name__}")
        return v.reshape(())

    def describe(self) -> dict:
        """Kind and name."""
        return {"kind": "function", "name": self.name}


# ----------------------------------------------------------------------------------------------- binding

class BoundTargets:
    """Target objects bound to the ``n`` images of one call: one object per image, what each kept from its
    unperturbed output (shared by every view of the binding), and the images this view's rows come from.

    ``check_target`` makes one; ``split_target`` makes views of some of its images (``images``: their indices in
    the call); ``target_indices`` on unperturbed outputs returns the view's image indices, and ``target_scores``
    scores each row by the target of the image it gives.
    """

    def __init__(self, targets: Sequence[TargetObject], images: torch.Tensor | None = None,
                 memo: dict | None = None) -> None:
        self.targets = list(targets)
        self.images = images
        self.memo = {} if memo is None else memo
        kinds = {t.kind for t in self.targets}
        if len(kinds) > 1:
            raise ValueError(f"the targets of one call must be of one kind, got {sorted(kinds)}")
        self.kind = kinds.pop() if kinds else "function"

    @property
    def n(self) -> int:
        """Images of the whole call."""
        return len(self.targets)

    def __len__(self) -> int:
        return self.n if self.images is None else int(self.images.numel())

    def view(self, part: slice | torch.Tensor | Sequence[int]) -> "BoundTargets":
        """The view of images ``part`` of this view (a slice or indices), sharing the memo."""
        own = torch.arange(self.n) if self.images is None else self.images
        sel = own[part] if isinstance(part, slice) else own[torch.as_tensor(part, dtype=torch.long).cpu()]
        return BoundTargets(self.targets, sel.reshape(-1), self.memo)

    def image_ids(self, rows: int, device: torch.device | None = None) -> torch.Tensor:
        """The image index of each of ``rows`` unperturbed rows of this view (an error when they differ in
        number)."""
        ids = torch.arange(self.n) if self.images is None else self.images
        if rows != ids.numel():
            raise ValueError(f"the outputs hold {rows} rows for {ids.numel()} images of the target; a method must "
                             "split the target with split_target(target, images) before scoring a subset")
        return ids.to(device) if device is not None else ids

    def prepare(self, outputs: object, ids: torch.Tensor) -> None:
        """Keep, once per image, what its target reads from the unperturbed output (row j is image ids[j])."""
        for j, i in enumerate(ids.tolist()):
            if i not in self.memo:
                self.memo[i] = self.targets[i].prepare(outputs, j)

    def scores(self, outputs: object, ids: torch.Tensor) -> torch.Tensor:
        """The score of each output row, row r by the target of image ``ids[r]``."""
        ids_l = ids.reshape(-1).tolist()
        if len(ids_l) != output_rows(outputs):
            raise ValueError(f"got {len(ids_l)} image indices for {output_rows(outputs)} output rows")
        if not ids_l:
            return torch.zeros(0)
        missing = [(j, i) for j, i in enumerate(ids_l) if i not in self.memo]
        for j, i in missing:  # not seen unperturbed (a method that scored before any clean pass): these rows
            self.memo[i] = self.targets[i].prepare(outputs, j)
        groups: dict[int, list[int]] = {}
        for r, i in enumerate(ids_l):
            groups.setdefault(id(self.targets[i]), []).append(r)
        if len(groups) == 1:
            t = self.targets[ids_l[0]]
            return t.score_rows(outputs, list(range(len(ids_l))), [self.memo[i] for i in ids_l])
        parts: list[tuple[list[int], torch.Tensor]] = []
        for rows in groups.values():
            t = self.targets[ids_l[rows[0]]]
            parts.append((rows, t.score_rows(outputs, rows, [self.memo[ids_l[r]] for r in rows])))
        order = torch.as_tensor([r for rows, _ in parts for r in rows], device=parts[0][1].device)
        flat = torch.cat([s for _, s in parts])
        return flat.new_zeros(len(ids_l)).index_add(0, order, flat)

    def describe(self) -> list[dict]:
        """One description per image of this view."""
        ids = range(self.n) if self.images is None else self.images.tolist()
        return [self.targets[i].describe() for i in ids]

    def __repr__(self) -> str:
        return f"BoundTargets(kind={self.kind!r}, images={len(self)} of {self.n})"
