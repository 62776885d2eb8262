"""Detection and segmentation runs over a whole dataset: each image's targets are its detections (score at least
a threshold) or its predicted class regions, each explained as one row routed to its image, with
``explain_targets`` (one forward pass and one backward pass per target for the methods that have a one-forward
pass, K rows of the image otherwise), and scored per target.

Where the dataset has its objects (an annotation file, ``datasets.annotations``), the localisation metrics are
computed against them: a detection against the true box of its class that it overlaps most (IoU at least
``iou``; a detection matching no true box has no value), a class region against the true pixels of that class
(the objects' masks, or their boxes when the file has no masks). Without them, against the target's own object
(the detection's box, the predicted region). Each row has a unit of its own (``image * UNIT + k`` for the image's
k-th target), which the summary's statistics count: n is the number of targets, and the intervals and paired
tests resample and pair by image (``datasets.summary``), since the targets of one image are not independent.
A row's ``score`` is the detection's score; ``pred_prob`` (a classifier's top-1 probability) stays empty.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from interpretorch.attribution.registry import explain_targets, reexplainers
from interpretorch.capture import frozen
from interpretorch.core.batching import chunks, rows_per_pass
from interpretorch.core.target_objects import (DetectionTarget, SegmentationTarget, box_iou, detection_rows,
                                               segmentation_logits)
from interpretorch.core.targets import check_finite, concat_outputs
from interpretorch.metrics.evaluate import evaluate
from interpretorch.metrics.localisation import boxes_to_masks

TASKS = ("detection", "segmentation")
TASK_METRICS = ("pointing_game", "energy_pointing_game", "deletion")  # the default of a task run
UNIT = 10_000  # targets of one image at most: a row's unit is image * UNIT + k
TASK_COLUMNS = ("unit", "score", "box_x0", "box_y0", "box_x1", "box_y1", "region_fraction", "truth_iou")

__all__ = ["TASKS", "TASK_METRICS", "UNIT", "TASK_COLUMNS", "TaskSpec", "image_targets", "truth_objects",
           "clean_outputs", "explain_task_batch"]


@dataclass(frozen=True)
class TaskSpec:
    """What a task run explains: ``task`` ("detection" or "segmentation"), the detections scoring at least
    ``score_threshold``, the regions of ``classes`` (class indices; None: every predicted class but 0, the
    background), and the IoU a detection needs with a true box of its class to be matched to it."""

    task: str
    score_threshold: float = 0.5
    classes: tuple[int, ...] | None = None
    iou: float = 0.5

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"a dataset task is one of {', '.join(TASKS)}, got {self.task!r}")
        if not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"iou must be in [0, 1], got {self.iou}")

    def describe(self) -> dict[str, Any]:
        """What the manifest records (and ``--resume`` compares)."""
        return {"task": self.task, "score_threshold": self.score_threshold,
                "classes": None if self.classes is None else list(self.classes), "iou": self.iou}


def clean_outputs(model: nn.Module, x: torch.Tensor, batch_size: int | None) -> Any:
    """The model's outputs on ``x`` (no gradient), ``batch_size`` rows per call."""
    outs = []
    with frozen(model), torch.no_grad():
        for sl in chunks(x.shape[0], rows_per_pass(batch_size, x.device)):
            out = model(x[sl])
            check_finite(out)
            outs.append(out)
    return concat_outputs(outs)


def image_targets(outputs: Any, spec: TaskSpec) -> list[list[tuple[Any, dict[str, Any]]]]:
    """Per image its targets with what each is: (``DetectionTarget`` of a detection's box and label, {label,
    score, box}) for each detection scoring at least the threshold, or (``SegmentationTarget`` of a class over its
    predicted region, {label, region_fraction, region (h, w) bool}) for each asked class that is predicted."""
    out: list[list[tuple[Any, dict[str, Any]]]] = []
    if spec.task == "detection":
        for d in detection_rows(outputs):
            rows = []
            for j in range(int(d["scores"].numel())):
                sc = float(d["scores"][j])
                if sc >= spec.score_threshold:
                    box = d["boxes"][j].detach().float().cpu()
                    lab = int(d["labels"][j])
                    rows.append((DetectionTarget(boxes=box, labels=lab),
                                 {"label": lab, "score": sc, "box": [float(v) for v in box]}))
            out.append(rows)
        return out
    logits = segmentation_logits(outputs).detach()
    pred = logits.argmax(1).cpu()
    k = logits.shape[1]
    if spec.classes is not None:
        bad = [c for c in spec.classes if not 0 <= c < k]
        if bad:
            raise ValueError(f"class(es) {bad} out of range: the model segments {k} classes")
    for i in range(pred.shape[0]):
        present = set(pred[i].unique().tolist())
        wanted = spec.classes if spec.classes is not None else [c for c in sorted(present) if c != 0 or k == 1]
        rows = []
        for c in wanted:
            if c in present:
                region = pred[i] == c
                rows.append((SegmentationTarget(int(c)), {"label": int(c), "region": region,
                                                          "region_fraction": float(region.float().mean())}))
        out.append(rows)
    return out


def truth_objects(spec: TaskSpec, infos: Sequence[dict[str, Any]], truth: Mapping[str, torch.Tensor],
                  labels: Sequence[int], size: tuple[int, int]) -> tuple[dict[str, Any], list[float | None]]:
    """The true object of each of an image's targets, for ``evaluate``: ``{"boxes": [(1 or 0, 4) per target]}``
    for detections (the true box of the same class with the highest IoU, when at least ``spec.iou``), or
    ``{"masks": (K, H, W)}`` for class regions (the true pixels of that class); and per target the IoU with its
    true object (the matched box's, or the region's with the class's true pixels; None without a true object)."""
    boxes = truth["boxes"].float()
    lab = torch.as_tensor(list(labels), dtype=torch.long)
    if spec.task == "detection":
        per, ious = [], []
        for info in infos:
            same = (lab == info["label"]) & ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
            if not bool(same.any()):
                per.append(torch.zeros(0, 4))
                ious.append(None)
                continue
            cand = boxes[same]
            iou = box_iou(torch.tensor([info["box"]]), cand)[0]
            best = int(iou.argmax())
            ious.append(float(iou[best]))
            per.append(cand[best:best + 1] if float(iou[best]) >= spec.iou else torch.zeros(0, 4))
        return {"boxes": per}, ious
    if "instances" in truth:
        inst = truth["instances"]
        masks = [torch.isin(inst, torch.nonzero(lab == info["label"]).reshape(-1) + 1) for info in infos]
    else:
        masks = [boxes_to_masks([boxes[lab == info["label"]]], size)[0] for info in infos]
    ious = []
    for m, info in zip(masks, infos):
        r = info["region"]
        if tuple(r.shape) != tuple(m.shape):
            r = torch.nn.functional.interpolate(r[None, None].float(), size=tuple(m.shape), mode="nearest")[0, 0] > 0.5
        union = int((r | m).sum())
        ious.append(float((r & m).sum()) / union if bool(m.any()) else None)  # None: no true pixel of the class
    return {"masks": torch.stack(masks) if masks else torch.zeros(0, *size, dtype=torch.bool)}, ious


def explain_task_batch(model: nn.Module, batch: dict[str, Any], good: list[int], x: torch.Tensor, spec: TaskSpec,
                       names: list[str], wanted: list[str], per_image: Sequence[str], layer: str | None,
                       batch_size: int | None, options: Mapping[str, Mapping[str, Any]],
                       metric_options: Mapping[str, Any], seeded: Callable[[int, int], Mapping[str, Any]],
                       save_maps: bool, class_labels: Mapping[str, Sequence[int]] | None
                       ) -> tuple[list[dict], dict[str, np.ndarray], list[int]]:
    """Explain (and score) the targets of the readable images ``good`` of one batch (``x``: their normalised
    pixels): the rows (one per target and method, or one per method for an image without a target), the maps
    per method (with ``save_maps``) and the units they belong to. The metrics of ``per_image`` run target by
    target with the options ``seeded(image, k)`` gives for the k-th target of the image (its own seed);
    ``class_labels`` maps an image's path to its true objects' class indices (None: the dataset has none)."""
    size = tuple(x.shape[-2:])
    targets = image_targets(clean_outputs(model, x, batch_size), spec)
    rows: list[dict] = []
    maps: dict[str, list[np.ndarray]] = {m: [] for m in names}
    units: list[int] = []
    det = [m for m in wanted if m not in per_image]
    noisy = [m for m in wanted if m in per_image]
    for i, k in enumerate(good):
        index, path = batch["index"][k], batch["path"][k]
        tg = targets[i]
        base = {"image": index, "path": path, "label": None, "pred": None, "error": None}
        if not tg:
            rows.extend({**base, "method": m, "target": None, "pred_prob": None} for m in names)
            continue
        if len(tg) > UNIT:
            raise ValueError(f"{path}: {len(tg)} targets, more than the {UNIT} a dataset run keeps per image; "
                             "raise --score-threshold")
        objs = [t for t, _ in tg]
        infos = [info for _, info in tg]
        exps = explain_targets(model, x[i], objs, names, layer, batch_size=batch_size, options=dict(options))
        rows_x = x[i:i + 1].expand(len(objs), *x.shape[1:])
        truth, ious = None, [None] * len(objs)
        if "objects" in batch and class_labels is not None:
            truth, ious = truth_objects(spec, infos, batch["objects"][k], class_labels[path], size)
        values: dict[str, dict] = {}
        if det:
            values = evaluate(model, rows_x, exps, target=objs, batch_size=batch_size, metrics=det,
                              **(truth or {}), **{key: v for key, v in metric_options.items()})
        one_noisy: list[dict[str, dict]] = []
        for j in range(len(objs) if noisy else 0):
            one = {m: _row(e, j) for m, e in exps.items()}
            opts = seeded(index, j)
            sub = None if truth is None else {key: v[j:j + 1] for key, v in truth.items()}
            one_noisy.append(evaluate(model, rows_x[j:j + 1], one, target=[objs[j]], batch_size=batch_size,
                                      metrics=noisy, explain_fn=reexplainers(one), **(sub or {}), **opts))
        for j, info in enumerate(infos):
            unit = index * UNIT + j
            box = info.get("box") or [None] * 4
            for m in names:
                row = {**base, "method": m, "target": info["label"], "pred_prob": None, "unit": unit,
                       "score": info.get("score"), "box_x0": box[0], "box_y0": box[1], "box_x1": box[2],
                       "box_y1": box[3], "region_fraction": info.get("region_fraction"), "truth_iou": ious[j]}
                for col, entry in values.get(m, {}).items():
                    if col != "target":
                        row[col] = entry["per_image"][j]
                if one_noisy:
                    for col, entry in one_noisy[j][m].items():
                        if col != "target":
                            row[col] = entry["per_image"][0]
                rows.append(row)
            units.append(unit)
        if save_maps:
            for m, e in exps.items():
                maps[m].append(e.map2d().detach().float().cpu().numpy())
    out = {m: np.concatenate(v) for m, v in maps.items() if v} if save_maps and units else {}
    return rows, out, units


def _row(exp: Any, j: int) -> Any:
    """Row ``j`` of an explanation of K targets, as a one-row Explanation."""
    import dataclasses

    def one(t: Any) -> Any:
        return t[j:j + 1] if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == len(exp) else t
    extras = dict(exp.extras)
    if isinstance(extras.get("targets"), list) and len(extras["targets"]) == len(exp):
        extras["targets"] = extras["targets"][j:j + 1]
    return dataclasses.replace(exp, maps=exp.maps[j:j + 1], target=one(exp.target), raw=one(exp.raw),
                               scores=one(exp.scores), outputs=one(exp.outputs), extras=extras)

