"""``run``: explain a batch of images with several methods and return one result object that reports render.

Predictions come from the outputs the methods computed anyway (no extra forward pass); methods of one
shared pass run together and their time is counted once.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.common import clean_pass, resolve_layer
from interpretorch.attribution.registry import (explain, explain_targets, get_method, method_options, reexplainers,
                                                resolve_methods)
from interpretorch.core import check_inputs
from interpretorch.core.targets import Target, check_target
from interpretorch.explanation import Explanation

SANITY_PAGE = "sanity/index.html"  # where a report links each method's sanity verdict


@dataclass
class MethodRun:
    """One method's explanation in a run, with what produced it and what it cost."""

    name: str
    explanation: Explanation
    options: dict[str, Any]
    seconds: float
    shared_with: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The method's map kind: pixel, region or token."""
        return get_method(self.name).kind

    @property
    def class_agnostic(self) -> bool:
        """Whether the method's map is the same whatever class is explained (Eigen-CAM, raw attention)."""
        return get_method(self.name).class_agnostic


@dataclass
class RunResult:
    """Everything a run produced: per image the top predictions, per method the explanation."""

    inputs: torch.Tensor
    names: list[str]
    predictions: list[list[dict[str, Any]]]
    methods: dict[str, MethodRun]
    target: Target
    layer: str | None
    class_names: list[str]
    model_name: str = "model"
    device: str = "cpu"
    display: torch.Tensor | None = None
    evaluation: dict[str, dict] | None = None
    evaluation_seconds: float | None = None
    failed: list[dict[str, str]] = field(default_factory=list)
    sanity: dict[str, dict] | None = None
    ranks: dict[int, dict[str, MethodRun]] = field(default_factory=dict)
    labels: list[int | None] | None = None
    evaluation_protocol: dict[str, dict] | None = None
    outputs: torch.Tensor | None = None
    interrupted: bool = False  # Ctrl-C with keep_partial=True: only the finished methods, no evaluation
    settings: dict[str, Any] | None = None  # the settings profile the run was given (CPU or the papers')
    sanity_check: Any = None  # the SanityResult of ``run(..., sanity=True)``, for its own report
    task: dict[str, Any] | None = None  # detection / segmentation / similarity runs: per row what it explains

    @property
    def explanations(self) -> dict[str, Explanation]:
        """{method: Explanation}."""
        return {m: r.explanation for m, r in self.methods.items()}

    def correct(self) -> list[bool | None] | None:
        """Per image whether the top prediction is its label (None where no label is known)."""
        if self.labels is None:
            return None
        return [None if lab is None or not preds else preds[0]["index"] == lab
                for lab, preds in zip(self.labels, self.predictions)]

    def comparisons(self, seed: int = 0) -> dict[str, Any] | None:
        """Paired tests between the methods on each metric's per-image values (Wilcoxon, Holm over all of them,
        a winner only when the corrected p < 0.05, no comparison across map kinds a metric does not suit) and
        the headline they support; None without an evaluation."""
        if not self.evaluation:
            return None
        from interpretorch.datasets.summary import summarize

        methods = list(self.evaluation)
        n = len(self.names)

        def per_image(m: str, k: str) -> list:
            e = self.evaluation[m].get(k)
            return e.get("per_image") or [] if isinstance(e, dict) else []

        metrics = [k for k in dict.fromkeys(k for m in methods for k in self.evaluation[m])
                   if any(per_image(m, k) for m in methods)
                   and all(v is None or isinstance(v, (int, float)) for m in methods for v in per_image(m, k))]
        table: dict[str, list] = {"image": [], "path": [], "method": [], "error": [], **{k: [] for k in metrics}}
        for m in methods:
            for i in range(n):
                table["image"].append(i)
                table["path"].append(self.names[i])
                table["method"].append(m)
                table["error"].append(None)
                for k in metrics:
                    vals = per_image(m, k)
                    table[k].append(vals[i] if i < len(vals) else None)
        kinds = {m: self.methods[m].kind for m in methods if m in self.methods}
        s = summarize(table, methods, metrics, seed=seed, n_resamples=2000, kinds=kinds)
        return {k: s[k] for k in ("headline", "paired", "refused", "correction", "test", "images")}

    def class_name(self, index: int | None) -> str | None:
        """The name of class ``index`` (None when unknown)."""
        if index is None or index >= len(self.class_names):
            return None
        return self.class_names[index]


def top_predictions(outputs: Any, class_names: Sequence[str], k: int = 5) -> list[list[dict[str, Any]]]:
    """Per image the ``k`` most probable classes: [{"index", "name", "prob"}, ...] ([] for non-class outputs)."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() != 2:
        from interpretorch.core.target_objects import output_rows

        return [[] for _ in range(output_rows(outputs))]
    probs = outputs.detach().float().softmax(1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[{"index": int(i), "name": class_names[int(i)] if int(i) < len(class_names) else f"class {int(i)}",
              "prob": float(p)} for p, i in zip(pv, iv)] for pv, iv in zip(top.values, top.indices)]


def plan_steps(methods: Sequence[str], options: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """Group methods into steps: the members of a shared pass without options of their own run as one step."""
    groups: dict[str, list[str]] = {}
    steps: list[list[str]] = []
    for m in methods:
        g = get_method(m).group
        if g is not None and not options.get(m):
            if g not in groups:
                groups[g] = []
                steps.append(groups[g])
            groups[g].append(m)
        else:
            steps.append([m])
    return steps


def run(model: nn.Module, inputs: torch.Tensor, methods: str | Sequence[str] | None = None,
        target: Target = "top1", layer: str | nn.Module | None = None, *, batch_size: int | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None, names: Sequence[str] | None = None,
        class_names: Sequence[str] | None = None, topk: int = 5, evaluate: bool = False,
        metrics: str | Sequence[str] | None = None, display: torch.Tensor | None = None, model_name: str = "model",
        progress: Callable[[list[str]], None] | None = None, top_classes: int = 1,
        labels: Sequence[int | None] | None = None,
        eval_progress: Callable[[int, int, str], None] | None = None, keep_partial: bool = False,
        failed: Sequence[Mapping[str, str]] = (), settings: Mapping[str, Any] | None = None,
        device_label: str | None = None, sanity: bool = False, sanity_steps: int | None = None,
        sanity_page: str = SANITY_PAGE, task: Mapping[str, Any] | None = None,
        row_images: Sequence[int] | None = None) -> RunResult:
    """Explain ``inputs`` with each method (default: ``default_methods()``; "all" for every one) and, with
    ``evaluate``, score the maps; returns a :class:`RunResult`.

    ``options`` maps a method to its own keyword arguments; ``class_names`` default to ImageNet's when the
    model has 1000 outputs; ``progress(step)`` is called after each step (a list of method names).
    ``top_classes`` K > 1 (with ``target="top1"``) also explains each image's 2nd to K-th most probable classes
    (``RunResult.ranks``; class-agnostic methods only once); ``labels`` (a class index or None per image) let the
    report mark right and wrong predictions; ``eval_progress(done, total, label)`` follows the evaluation.
    ``keep_partial``: Ctrl-C returns the methods finished so far (``RunResult.interrupted``, no metrics).
    ``failed`` (the images that could not be read: ``{"file", "error"}``), ``settings`` (the settings profile
    chosen) and ``device_label`` (the device as the user named it; default the inputs' device) are recorded for
    the report. ``sanity``: also the cascading model-randomization check of the methods (same targets, options
    and layer; ``sanity_steps`` top blocks, default all) in ``RunResult.sanity_check``, each method's verdict in
    ``RunResult.sanity`` linking to ``sanity_page``. ``task``: for the rows of :func:`task_rows`, its ``summary``
    with its ``rows`` (what each row explains), kept in ``RunResult.task`` for the report. ``row_images``
    (:attr:`TaskRows.images`: the image each row was made from, with one target per row): the rows of one image are
    explained together by ``explain_targets`` (one forward pass of the image and one backward pass per target for
    the methods that have such a pass), the maps in row order.
    """
    x = check_inputs(model, inputs)
    if row_images is not None and not isinstance(target, (list, tuple)):
        raise ValueError("row_images needs a list of targets, one per row")
    per_row = list(target) if row_images is not None else None
    if per_row is not None and (len(per_row) != x.shape[0] or len(row_images) != x.shape[0]):
        raise ValueError(f"row_images and target need one entry per row ({x.shape[0]}), got {len(row_images)} "
                         f"and {len(per_row)}")
    target = check_target(target, x.shape[0])
    if int(top_classes) < 1:
        raise ValueError(f"top_classes must be >= 1, got {top_classes}")
    if top_classes > 1 and not (isinstance(target, str) and target == "top1"):
        raise ValueError("top_classes > 1 explains the K most probable classes of each image; it needs "
                         "target='top1'")
    if labels is not None and len(labels) != x.shape[0]:
        raise ValueError(f"labels has {len(labels)} entries for {x.shape[0]} images; give one (or None) per image")
    names_ = resolve_methods(methods, model)
    opts = method_options(names_, options)
    layered = any(get_method(m).needs_layer for m in names_)
    if layer is not None and not layered:
        raise ValueError(f"layer= is for the layer methods; {', '.join(names_)} explain the input pixels")
    layer_name = resolve_layer(model, layer, x) if layered else None

    def explain_all(methods_: list[str], tgt: Target, runs: dict[str, MethodRun] | None = None
                    ) -> dict[str, MethodRun]:
        runs = {} if runs is None else runs
        for step in plan_steps(methods_, opts):
            t0 = time.perf_counter()
            needs = get_method(step[0]).needs_layer
            step_opts = {m: opts[m] for m in step if m in opts}
            if per_row is not None and tgt is target:
                got = _explain_by_image(model, x, step, per_row, list(row_images), layer_name if needs else None,
                                        batch_size, step_opts)
            else:
                got = explain(model, x, step, tgt, layer_name if needs else None, batch_size=batch_size,
                              options=step_opts)
            seconds = time.perf_counter() - t0
            for m in step:
                runs[m] = MethodRun(m, got[m], opts.get(m, {}), seconds, [o for o in step if o != m])
            if progress is not None:
                progress(step)
        return runs

    results: dict[str, MethodRun] = {}
    interrupted = False
    try:
        explain_all(names_, target, results)
    except KeyboardInterrupt:
        if not keep_partial or not results:
            raise
        interrupted = True  # keep the methods finished before Ctrl-C
    outputs = next((r.explanation.outputs for r in results.values() if r.explanation.outputs is not None), None)
    if outputs is None and per_row is None:  # task rows have no classes to predict: no pass for predictions
        _, outputs = clean_pass(model, x, target, batch_size)
    if class_names is None or not len(class_names):
        class_names = _guess_class_names(outputs)
    result = RunResult(inputs=x, names=list(names) if names is not None else [f"image {i}" for i in range(len(x))],
                       predictions=[[] for _ in range(x.shape[0])] if outputs is None else
                       top_predictions(outputs, class_names, topk), methods=results, target=target,
                       layer=layer_name, class_names=list(class_names), model_name=model_name,
                       device=device_label or str(x.device), display=display,
                       labels=None if labels is None else [None if v is None else int(v) for v in labels],
                       outputs=outputs if isinstance(outputs, torch.Tensor) else None, interrupted=interrupted,
                       failed=[dict(f) for f in failed], settings=None if settings is None else dict(settings),
                       task=None if task is None else dict(task))
    if interrupted:
        return result
    if top_classes > 1:
        if outputs is None or outputs.dim() != 2:
            raise ValueError("top_classes > 1 needs class outputs (B, K) to rank the classes")
        if int(top_classes) > outputs.shape[1]:
            raise ValueError(f"--topk / top_classes {int(top_classes)} is more than the model's "
                             f"{outputs.shape[1]} classes")
        k = int(top_classes)
        order = outputs.detach().float().topk(k, dim=1).indices
        dependent = [m for m in names_ if not get_method(m).class_agnostic]
        for r in range(2, k + 1):
            result.ranks[r] = explain_all(dependent, order[:, r - 1].tolist()) if dependent else {}
    if evaluate:
        from interpretorch.metrics import evaluate as evaluate_maps
        from interpretorch.metrics.evaluate import protocol

        t0 = time.perf_counter()
        try:
            result.evaluation = evaluate_maps(model, x, result.explanations, target=target, batch_size=batch_size,
                                              metrics=metrics, progress=eval_progress, outputs=outputs,
                                              explain_fn=reexplainers(result.explanations))
        except KeyboardInterrupt:
            if not keep_partial:
                raise
            result.interrupted = True  # the maps are finished; the metrics are not
            return result
        result.evaluation_seconds = time.perf_counter() - t0
        result.evaluation_protocol = protocol(metrics)
    if sanity:
        result.sanity_check = sanity_of(model, x, results, target, layer_name, batch_size, sanity_steps)
        result.sanity = {m: {**v.to_dict(), "report": sanity_page}
                         for m, v in result.sanity_check.verdicts.items()}
    return result


def _explain_by_image(model: nn.Module, x: torch.Tensor, methods: list[str], targets: list[Any],
                      row_images: list[int], layer: str | None, batch_size: int | None,
                      options: Mapping[str, Mapping[str, Any]]) -> dict[str, Explanation]:
    """``methods`` on rows ``x`` (row r explained by ``targets[r]``), the rows of each image of ``row_images``
    explained together by ``explain_targets``; each method's maps, scores and fields in row order."""
    groups: dict[int, list[int]] = {}
    for r, i in enumerate(row_images):
        groups.setdefault(int(i), []).append(r)
    parts = [(rows, explain_targets(model, x[rows[0]], [targets[r] for r in rows], methods, layer,
                                    batch_size=batch_size, options={m: dict(o) for m, o in options.items()}))
             for rows in groups.values()]
    order = torch.tensor([r for rows, _ in parts for r in rows]).argsort()
    return {m: _rows_in_order([got[m] for _, got in parts], order) for m in methods}


def _rows_in_order(parts: list[Explanation], order: torch.Tensor) -> Explanation:
    """The explanations of several images' rows as one, rows put back in ``order``."""
    from dataclasses import replace

    def cat(name: str) -> Any:
        vals = [getattr(e, name) for e in parts]
        if any(not isinstance(v, torch.Tensor) for v in vals):
            return None
        return torch.cat(vals)[order.to(vals[0].device)]

    first = parts[0]
    extras = dict(first.extras)
    if all(isinstance(e.extras.get("targets"), list) for e in parts):
        flat = [t for e in parts for t in e.extras["targets"]]
        extras["targets"] = [flat[int(i)] for i in order]
    return replace(first, maps=cat("maps"), target=cat("target"), raw=cat("raw"), scores=cat("scores"),
                   outputs=cat("outputs"), extras=extras)


def sanity_of(model: nn.Module, x: torch.Tensor, runs: Mapping[str, MethodRun], target: Target,
              layer: str | None, batch_size: int | None = None, max_steps: int | None = None) -> Any:
    """The cascading model-randomization check (Adebayo et al. 2018) of a run's methods, for the classes they
    explained, with their options and layer; a ``SanityResult``."""
    from interpretorch.sanity import model_randomization

    idx = next((r.explanation.target for r in runs.values() if r.explanation.target is not None), None)
    return model_randomization(model, x, list(runs), mode="cascading",
                               target=idx if idx is not None else target, layer=layer, batch_size=batch_size,
                               options={m: r.options for m, r in runs.items() if r.options}, max_steps=max_steps)


def _guess_class_names(outputs: torch.Tensor) -> list[str]:
    from interpretorch.models import imagenet_classes

    return imagenet_classes() if isinstance(outputs, torch.Tensor) and outputs.dim() == 2 and \
        outputs.shape[1] == 1000 else []


TASKS = ("class", "detection", "segmentation", "similarity")


@dataclass
class TaskRows:
    """The rows a detection / segmentation / similarity run explains: one row per detection, per (image, class
    region) or per image, each with its own target and its picture (the box or region outlined)."""

    task: str
    inputs: torch.Tensor
    display: torch.Tensor | None
    names: list[str]
    targets: list[Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    images: list[int] = field(default_factory=list)  # the image (position in the inputs) each row was made from


def _outputs(model: nn.Module, x: torch.Tensor, batch_size: int | None) -> Any:
    from interpretorch.capture import frozen
    from interpretorch.core.batching import chunks, rows_per_pass
    from interpretorch.core.targets import check_finite, concat_outputs

    outs = []
    with frozen(model):
        for sl in chunks(x.shape[0], rows_per_pass(batch_size, x.device)):
            out = model(x[sl])
            check_finite(out)
            outs.append(out)
    return concat_outputs(outs)


def infer_task(model: nn.Module, inputs: torch.Tensor, reference: bool = False) -> str:
    """The task a model's output says it does, from one image: "detection" (a list of dicts with boxes),
    "segmentation" (4-D logits, a dict with 'out', 4-D .logits), "similarity" (embeddings; 2-D outputs only with
    a ``reference``), else "class"."""
    from interpretorch.core.target_objects import infer_task as from_outputs

    x = check_inputs(model, inputs)
    return from_outputs(_outputs(model, x[:1], 1), reference)


def task_rows(model: nn.Module, inputs: torch.Tensor, task: str, *, display: torch.Tensor | None = None,
              names: Sequence[str] | None = None, class_names: Sequence[str] = (), score_threshold: float = 0.5,
              classes: Sequence[int | str] | None = None, reference: torch.Tensor | None = None,
              batch_size: int | None = None) -> TaskRows:
    """The rows and targets that explain ``inputs`` for ``task``:

    - "detection": one row per detection with score >= ``score_threshold`` (a ``DetectionTarget`` of its box and
      label, pytorch-grad-cam's rule); the picture has the box drawn;
    - "segmentation": one row per (image, class) whose predicted region is not empty, for ``classes`` (indices
      or names; default every predicted class but class 0, the background of VOC-style models), a
      ``SegmentationTarget`` of the class over its predicted region; the picture has the region outlined;
    - "similarity": one row per image, the cosine similarity of its embedding to ``reference``'s (one image,
      preprocessed like the inputs), computed once.

    The unperturbed outputs are computed once here. ``summary`` says how many rows came from how many images
    and what was left out (images without a detection, classes not predicted).
    """
    from interpretorch.core.target_objects import (DetectionTarget, SegmentationTarget, SimilarityTarget,
                                                   detection_rows, segmentation_logits)
    from interpretorch.imageops import draw_box, draw_outline
    from interpretorch.labels import LabelError, class_index

    if task not in TASKS[1:]:
        raise ValueError(f"task must be one of {', '.join(TASKS[1:])} for task rows, got {task!r}")
    x = check_inputs(model, inputs)
    n = x.shape[0]
    names = list(names) if names is not None else [f"image {i}" for i in range(n)]

    def label_name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else f"class {c}"

    rows: list[dict[str, Any]] = []
    index: list[int] = []
    targets: list[Any] = []
    pictures: list[torch.Tensor] = []
    summary: dict[str, Any] = {"task": task, "images": n}
    if task == "similarity":
        if reference is None:
            raise ValueError("a similarity task needs a reference image (--reference IMG)")
        t = SimilarityTarget.from_image(model, reference.to(x.device))
        with torch.no_grad():
            from interpretorch.core.targets import target_scores

            sims = target_scores(_outputs(model, x, batch_size), [t] * n)
        for i in range(n):
            rows.append({"image": names[i], "kind": "similarity", "similarity": float(sims[i]),
                         "caption": f"similarity {float(sims[i]):.2f} to the reference"})
            index.append(i)
            targets.append(t)
        summary["n_rows"] = n
        return TaskRows(task, x, display, names, targets, rows, summary, index)
    outputs = _outputs(model, x, batch_size)
    if task == "detection":
        dets = detection_rows(outputs)
        best = max((float(d["scores"].max()) for d in dets if d["scores"].numel()), default=None)
        empty = []
        for i, d in enumerate(dets):
            keep = [j for j in range(int(d["scores"].numel())) if float(d["scores"][j]) >= score_threshold]
            if not keep:
                empty.append(names[i])
            for j in keep:
                box = d["boxes"][j].detach().float().cpu()
                lab, sc = int(d["labels"][j]), float(d["scores"][j])
                rows.append({"image": names[i], "kind": "detection", "detection": j, "label": lab,
                             "label_name": label_name(lab), "score": sc,
                             "box": [round(float(v), 1) for v in box],
                             "caption": f"{label_name(lab)} {sc:.2f}"})
                index.append(i)
                targets.append(DetectionTarget(boxes=box, labels=lab))
                if display is not None:
                    pictures.append(draw_box(display[i], box.tolist()))
        if not rows:
            raise ValueError(f"no detection with score >= {score_threshold:g} in the {n} image(s)"
                             + (f" (the highest is {best:.3f}); lower --score-threshold" if best is not None
                                else "; the model detected nothing"))
        summary.update(n_rows=len(rows), score_threshold=score_threshold, images_without_detection=empty)
    else:
        logits = segmentation_logits(outputs)
        pred = logits.argmax(1)
        k = logits.shape[1]
        wanted: list[int] | None = None
        if classes is not None:
            try:
                wanted = [c if isinstance(c, int) else class_index(str(c), class_names) for c in classes]
            except LabelError as e:
                raise ValueError(str(e)) from None
            bad = [c for c in wanted if not 0 <= c < k]
            if bad:
                raise ValueError(f"class(es) {bad} out of range: the model segments {k} classes")
        absent = []
        for i in range(n):
            present = [int(c) for c in pred[i].unique().tolist()]
            for c in (wanted if wanted is not None else [c for c in present if c != 0 or k == 1]):
                if c not in present:
                    absent.append({"image": names[i], "class": c, "class_name": label_name(c)})
                    continue
                region = pred[i] == c
                rows.append({"image": names[i], "kind": "segmentation", "class": c, "class_name": label_name(c),
                             "pixels": int(region.sum()), "region_fraction": float(region.float().mean()),
                             "caption": f"{label_name(c)} region"})
                index.append(i)
                targets.append(SegmentationTarget(c))
                if display is not None:
                    mask = SegmentationTarget(c).object_mask(region, tuple(display.shape[-2:]))
                    pictures.append(draw_outline(display[i], mask))
        if not rows:
            raise ValueError("no asked class is predicted in any image" if wanted is not None else
                             "the model predicts no class but the background in any image; name --classes")
        summary.update(n_rows=len(rows), classes_not_predicted=absent)
    idx = torch.tensor(index, device=x.device)
    row_names = [f"{r['image']} [{r['caption']}]" for r in rows]
    return TaskRows(task, x[idx], torch.stack(pictures) if pictures else None, row_names, targets, rows, summary,
                    index)
