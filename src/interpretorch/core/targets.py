"""What is explained: turn a user's ``target`` (top1, int, one int per image, a callable, or target objects:
:mod:`interpretorch.core.target_objects`) into scores per row.

``check_target`` validates a target once for the whole batch, before any chunking (target objects are bound to
the call's images there); ``target_scores`` is the one place where rows of model outputs become the scores a
method explains. For target objects the "indices" of the rows are the images they come from (see
:mod:`interpretorch.core.target_objects`, "Routing"), which every method already carries to its rows.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

import torch

from interpretorch.core.target_objects import (BoundTargets, ClassTarget, DetectionTarget, FunctionTarget,
                                               RegressionTarget, SegmentationTarget, SimilarityTarget, TargetObject,
                                               output_rows)

Target = Union[str, int, Sequence[int], torch.Tensor, Callable[[torch.Tensor], torch.Tensor], TargetObject,
               Sequence[TargetObject], BoundTargets, None]
__all__ = ["Target", "SCORES", "TARGET_KINDS", "is_callable_target", "is_target_object", "check_target", "split_target",
           "target_indices", "target_scores", "image_target", "check_finite", "concat_outputs", "tensor_outputs", "target_kind",
           "describe_target", "TargetObject", "ClassTarget", "DetectionTarget", "SegmentationTarget",
           "SimilarityTarget", "RegressionTarget", "FunctionTarget", "BoundTargets"]
SCORES = ("logit", "softmax")
# What a target can be (``target_kind``): a method declares those it explains (``MethodSpec.targets``).
TARGET_KINDS = ("class", "callable", "detection", "segmentation", "similarity", "regression", "function")


def is_callable_target(target: Target) -> bool:
    """Whether ``target`` is a plain function of the outputs (not class indices, not target objects)."""
    return callable(target) and not isinstance(target, (torch.Tensor, TargetObject, BoundTargets))


def is_target_object(target: Target) -> bool:
    """Whether a checked ``target`` is bound target objects (scores routed by image, see ``target_objects``)."""
    return isinstance(target, BoundTargets)


def target_kind(target: Target) -> str:
    """The kind of a target: "class" (top1, ints, ClassTarget), "callable", or a target object's kind
    ("detection", "segmentation", "similarity", "regression", "function")."""
    if isinstance(target, BoundTargets):
        return target.kind
    if isinstance(target, TargetObject):
        return target.kind
    if isinstance(target, (list, tuple)) and target and all(isinstance(t, TargetObject) for t in target):
        kinds = {t.kind for t in target}
        return kinds.pop() if len(kinds) == 1 else "mixed"
    if is_callable_target(target):
        return "callable"
    return "class"


def describe_target(target: Target) -> list[dict] | None:
    """One JSON-ready description per image for target objects (None for class and callable targets)."""
    return target.describe() if isinstance(target, BoundTargets) else None


def _bind(target: TargetObject | Sequence[TargetObject], n: int) -> Target:
    """Target objects bound to ``n`` images (class targets become today's int / list forms)."""
    if isinstance(target, ClassTarget):
        return check_target(target.index, n)
    if isinstance(target, TargetObject):
        return BoundTargets([target] * n)
    items = list(target)
    if all(isinstance(t, ClassTarget) for t in items):
        if not all(isinstance(t.index, int) and not isinstance(t.index, bool) for t in items):
            raise TypeError("a list of ClassTargets gives one int class per image; use ClassTarget('top1') for all")
        return check_target([t.index for t in items], n)
    if len(items) != n:
        raise ValueError(f"got {len(items)} targets for {n} images; give one target per image, or one target "
                         "for all of them")
    return BoundTargets(items)


def check_target(target: Target, n: int) -> Target:
    """Validate ``target`` for ``n`` images; returns "top1", an int, a (n,) long tensor, or the callable.

    A per-image target (list, tuple or 1-D tensor) must hold exactly one class per image. Target objects (one
    for all images, or a list with one per image) are returned bound to the images (:class:`BoundTargets`);
    a ``ClassTarget`` becomes the int / list form above.
    """
    if isinstance(target, BoundTargets):
        if len(target) != n:
            raise ValueError(f"the targets are bound to {len(target)} images, the call has {n}")
        return target
    if isinstance(target, TargetObject) or (
            isinstance(target, (list, tuple)) and target and all(isinstance(t, TargetObject) for t in target)):
        return _bind(target, n)
    if is_callable_target(target):
        return target
    if target is None or (isinstance(target, str) and target == "top1"):
        return "top1"
    if isinstance(target, str):
        raise ValueError(f"unknown target {target!r}; use 'top1', an int, a list of ints or a callable")
    if isinstance(target, bool):
        raise TypeError("target must be 'top1', an int, one int per image or a callable, not a bool")
    if isinstance(target, int):
        return target
    if isinstance(target, torch.Tensor) and target.dim() == 0:
        if target.is_floating_point():
            raise TypeError(f"target must hold integer class indices, got a {target.dtype} tensor")
        return int(target)
    if isinstance(target, torch.Tensor):
        if target.numel() and (target.is_floating_point() or target.dtype == torch.bool):
            raise TypeError(f"target must hold integer class indices, got a {target.dtype} tensor")
        idx = target.detach().reshape(-1).long()
    elif isinstance(target, (list, tuple)):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
            raise TypeError(f"a per-image target must be a list of ints, got {list(target)!r}")
        idx = torch.tensor(list(target), dtype=torch.long)
    else:
        raise TypeError(f"target must be 'top1', an int, one int per image or a callable, "
                        f"got {type(target).__name__}")
    if idx.numel() != n:
        raise ValueError(f"got {idx.numel()} targets for {n} images; give exactly one class per image, "
                         "or a single int for all of them")
    return idx


def split_target(target: Target, sl: slice | torch.Tensor) -> Target:
    """The part of a checked target that belongs to images ``sl`` (a slice or image indices; shared targets pass
    through)."""
    if isinstance(target, BoundTargets):
        return target.view(sl)
    if isinstance(target, torch.Tensor):
        return target[sl] if isinstance(sl, slice) else target[sl.to(target.device)]
    return target


def image_target(target: Target, idx: torch.Tensor | None, images: torch.Tensor | slice) -> Target:
    """The target of rows made from the call's images ``images`` (indices or a slice), for a method or metric that
    re-explains or re-scores such rows: the images' classes ``idx[images]``, a view of bound target objects, or a
    shared target as it is."""
    if isinstance(target, BoundTargets):
        return target.view(images)
    if idx is None:
        return target
    return idx[images] if isinstance(images, slice) else idx[images.to(idx.device)]


def target_indices(outputs: torch.Tensor, target: Target) -> torch.Tensor | None:
    """Return one class index per output row (B,), or None when ``target`` is a callable.

    For bound target objects, the unperturbed ``outputs`` of the target's images: returns their image indices
    (what routes perturbed rows to their image's target) and records what each target reads from them.
    """
    if is_callable_target(target):
        return None
    if isinstance(target, TargetObject) or (isinstance(target, (list, tuple)) and target
                                            and all(isinstance(t, TargetObject) for t in target)):
        target = check_target(target, output_rows(outputs))
    if isinstance(target, BoundTargets):
        dev = _device(outputs)
        ids = target.image_ids(output_rows(outputs))
        target.prepare(outputs, ids)
        return ids.to(dev)
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"the model returns a {type(outputs).__name__}, not a (B, num_classes) tensor; pass a "
                        "callable target that picks the scores (e.g. lambda out: out['logits'][:, 3]) or wrap "
                        "the model so that it returns the logits")
    if outputs.dim() != 2:
        raise ValueError(f"class targets need (B, num_classes) outputs, got shape {tuple(outputs.shape)}; "
                         "pass a callable target for other heads")
    b, k = outputs.shape
    target = check_target(target, b)
    if isinstance(target, str):
        idx = outputs.detach().argmax(dim=1)
    elif isinstance(target, int):
        idx = torch.full((b,), target, dtype=torch.long, device=outputs.device)
    else:
        idx = target.to(outputs.device)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= k):
        raise ValueError(f"target class out of range [0, {k}): {idx.tolist()}")
    return idx


def target_scores(outputs: torch.Tensor, target: Target, indices: torch.Tensor | None = None,
                  kind: str = "logit") -> torch.Tensor:
    """Return the score of each output row: class ``indices`` (or those ``target`` picks) as a logit or
    softmax probability (``kind``), or ``target(outputs)`` for a callable target.

    Target objects score row r by the target of image ``indices[r]`` (their own score: ``kind`` is for class
    targets)."""
    if isinstance(target, TargetObject) or (isinstance(target, (list, tuple)) and target
                                            and all(isinstance(t, TargetObject) for t in target)):
        target = check_target(target, output_rows(outputs))
    if isinstance(target, BoundTargets):
        if indices is None:
            indices = target_indices(outputs, target)
        return target.scores(outputs, indices)
    if is_callable_target(target):
        scores = target(outputs)
        rows = _tensors(outputs)[0].shape[0] if _tensors(outputs) else None
        if not isinstance(scores, torch.Tensor) or scores.shape != (rows,):
            raise ValueError(f"a callable target must return one score per row of the outputs: expected shape "
                             f"({rows},), got {getattr(scores, 'shape', type(scores).__name__)}")
        return scores
    if kind not in SCORES:
        raise ValueError(f"unknown score {kind!r}; choose one of {SCORES}")
    if indices is None:
        indices = target_indices(outputs, target)
    if kind == "softmax":
        outputs = outputs.softmax(dim=1)
    return outputs.gather(1, indices[:, None].to(outputs.device)).squeeze(1)


def _device(value: object) -> torch.device:
    ts = _tensors(value)
    return ts[0].device if ts else torch.device("cpu")


def _tensors(value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def check_finite(outputs: object, what: str = "model outputs") -> None:
    """Raise a clear error when ``outputs`` (a tensor, or tensors in a dict / tuple) hold NaN or infinity."""
    tensors = _tensors(outputs)
    if not tensors:
        raise TypeError(f"{what} are a {type(outputs).__name__} holding no tensor; the model must return tensors")
    if not all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point()):
        raise FloatingPointError(f"{what} contain NaN or infinite values; check the input and the model")


def concat_outputs(chunks: list) -> object:
    """Concatenate per-chunk model outputs along the batch: tensors, or dicts / tuples of tensors."""
    first = chunks[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([c.detach() for c in chunks])
    if isinstance(first, (list, tuple)) and all(isinstance(c, (list, tuple)) for c in chunks) and any(
            c and all(isinstance(o, dict) for o in c) for c in chunks):  # one dict per row (detections)
        return [{k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in o.items()}
                for c in chunks for o in c]
    if isinstance(first, dict):
        return {k: concat_outputs([c[k] for c in chunks]) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(concat_outputs([c[i] for c in chunks]) for i in range(len(first)))
    return first


def tensor_outputs(outputs: object) -> torch.Tensor | None:
    """``outputs`` detached when they are one tensor (what predictions can be read from), else None."""
    return outputs.detach() if isinstance(outputs, torch.Tensor) else None
