"""One whole-dataset job as the command line asks for it (``explain --data`` / ``evaluate --data``): the settings in
a :class:`DatasetJob`, and :func:`run_dataset_job`, which joins ``torchrun``'s process group when there is one,
loads the model, opens the dataset, checks the settings against both, explains (and scores) every image, and on
rank 0 writes the report. :func:`estimate_dataset_job` says what the job will cost before it runs.

Nothing here reads command-line flags: the CLI parses them into a ``DatasetJob`` and prints what comes back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from interpretorch.attribution.cost import SHORTER, Estimate, estimate, shorter_settings, time_per_row
from interpretorch.attribution.registry import get_method, resolve_methods
from interpretorch.datasets import distributed as dist
from interpretorch.datasets import job as dataset_job
from interpretorch.datasets.job import (DatasetRun, metric_columns, per_image_metric, resolve_dataset_metrics,
                                       resolve_task_metrics, task_labels)
from interpretorch.datasets.report import PER_SECTION, write_dataset_report
from interpretorch.datasets.streams import DatasetError, ImageSet, open_images
from interpretorch.datasets.tasks import TASKS, TaskSpec
from interpretorch.datasets.writer import read_rows
from interpretorch.metrics.registry import get_metric
from interpretorch.models.loaded import LoadedModel

# Metrics whose rows depend on the image's content (IROF's superpixels), and those that explain again (their
# ``needs`` hold "explain_fn"): left out of the estimate and named as such. The pointing games run no model.
NOT_COUNTED = ("irof",)
NO_ROWS = ("pointing_game", "energy_pointing_game")

__all__ = ["DatasetJob", "DatasetJobResult", "run_dataset_job", "estimate_dataset_job", "prepare_dataset_job"]


@dataclass(frozen=True)
class DatasetJob:
    """What a whole-dataset run is asked to do. ``load_model(device)`` gives the model on ``device`` (the device
    ``torchrun`` assigns this process, else ``device``); ``methods`` is "all" or names; ``options`` are the
    methods' keyword arguments and ``metric_options`` the metrics' (``{"deletion": {"step": 0.05}}``)."""

    data: str | Path
    out: str | Path
    load_model: Callable[[str], LoadedModel]
    methods: str | Sequence[str]
    device: str = "cpu"
    model_name: str = "model"
    evaluate: bool = False
    metrics: str | Sequence[str] | None = None
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    metric_options: Mapping[str, Any] = field(default_factory=dict)
    target: Any = "top1"
    layer: str | None = None
    batch_size: int | None = None
    labels: str | None = None
    boxes: str | None = None
    masks: str | None = None
    limit: int | None = None
    seed: int = 0
    resume: bool = False
    save_maps: bool = False
    workers: int = 0
    shard_size: int = 256
    gallery_metric: str | None = None
    settings: Mapping[str, Any] | None = None  # the settings profile chosen (CPU or the papers'), for the record
    task: str | None = None  # "detection" / "segmentation": explain each image's detections / class regions
    score_threshold: float = 0.5  # detection: the detections explained score at least this
    classes: Sequence[int | str] | None = None  # segmentation: the classes whose regions are explained
    iou: float = 0.5  # detection: the IoU a detection needs with a true box of its class to be matched

    def __post_init__(self) -> None:
        """Refuse settings that contradict each other, before anything is loaded."""
        if self.workers < 0:
            raise DatasetError(f"--workers must be >= 0, got {self.workers}")
        if self.boxes and self.masks:
            raise DatasetError("give --boxes or --masks, not both")
        if self.metrics is not None and not self.evaluate:
            raise DatasetError("--metrics is for evaluate (or explain --evaluate)")
        if self.task not in (None, "class") + TASKS:
            raise DatasetError(f"--task {self.task} cannot run on a dataset; --data runs "
                               f"{', '.join(('class',) + TASKS)}")


@dataclass(frozen=True)
class Prepared:
    """A job with its model loaded, its dataset opened and its methods and layer resolved."""

    job: DatasetJob
    loaded: LoadedModel
    data: ImageSet
    methods: list[str]
    layer: str | None
    task: TaskSpec | None = None


@dataclass(frozen=True)
class DatasetJobResult:
    """What a dataset job gave: the run (images, failures, summary, manifest), and on rank 0 the report page."""

    run: DatasetRun
    page: Path | None
    rank: int = 0
    world: int = 1


def prepare_dataset_job(job: DatasetJob, device: str | None = None) -> Prepared:
    """Load the model (on ``device``, default the job's), open the dataset, resolve the methods and the layer,
    and check the target and the gallery metric against them (a ``DatasetError`` naming what is wrong)."""
    loaded = job.load_model(device or job.device)
    data = open_images(job.data, labels=job.labels, boxes=job.boxes, masks=job.masks, limit=job.limit,
                       seed=job.seed, class_names=loaded.class_names)
    methods = resolve_methods(job.methods, loaded.model if job.methods == "all" else None)
    layered = any(get_method(m).needs_layer for m in methods)
    if job.layer and not layered:
        raise DatasetError(f"--layer is for the layer methods; {', '.join(methods)} explain the input pixels")
    if not isinstance(job.target, (int, str)):
        raise DatasetError("--target with --data is 'top1', 'label' or one class index for every image")
    task = task_spec(job, loaded.class_names) if job.task in TASKS else None
    if task is not None:
        task_labels(data, loaded.class_names)  # every true object's label is one of the model's classes
    if job.gallery_metric is not None:
        wanted = resolve_task_metrics(job.metrics) if task is not None else \
            resolve_dataset_metrics(job.metrics, bool(job.boxes or job.masks))
        computed = metric_columns(wanted) if job.evaluate else []
        if job.gallery_metric not in computed:
            raise DatasetError(f"--gallery-metric {job.gallery_metric!r} is not computed in this run; "
                               f"choose one of: {', '.join(computed) or 'none (explain computes no metric)'}")
    return Prepared(job, loaded, data, methods, job.layer or (loaded.cam_layer if layered else None), task)


def task_spec(job: DatasetJob, class_names: Sequence[str]) -> TaskSpec:
    """The job's task with its classes as the model's class indices (a DatasetError names a class it lacks)."""
    from interpretorch.labels import LabelError, class_index

    classes = None
    if job.classes is not None:
        try:
            classes = tuple(c if isinstance(c, int) else class_index(str(c), class_names) for c in job.classes)
        except LabelError as e:
            raise DatasetError(f"--classes: {e}") from None
    if job.task != "segmentation" and classes is not None:
        raise DatasetError("--classes is for --task segmentation")
    try:
        return TaskSpec(job.task, float(job.score_threshold), classes, float(job.iou))
    except ValueError as e:
        raise DatasetError(str(e)) from None


def run_dataset_job(job: DatasetJob, on_estimate: Callable[[Estimate], Any] | None = None) -> DatasetJobResult:
    """Run ``job`` (under ``torchrun`` each process its share); rank 0 merges, summarises and writes the report.
    ``on_estimate`` receives rank 0's :func:`estimate_dataset_job` once the output folder is locked, before the
    first image (an estimate that fails is skipped). A SIGTERM stops the run as ``runstate.Terminated`` with the
    finished images kept."""
    rank, world, device = dist.init_from_env(job.device)
    try:
        prepared = prepare_dataset_job(job, device)
        loaded, data, methods = prepared.loaded, prepared.data, prepared.methods

        def announce() -> None:
            try:
                est = estimate_dataset_job(prepared)
            except (ValueError, KeyError, TypeError, AttributeError, RuntimeError):
                return  # an estimate never stops a run
            on_estimate(est)

        result = dataset_job.explain_dataset(
            loaded.model, data, job.out, preprocess=loaded.preprocess, methods=methods, metrics=job.metrics,
            evaluate_maps=job.evaluate, target=job.target, layer=prepared.layer, batch_size=job.batch_size,
            options=job.options, metric_options=job.metric_options, seed=job.seed, limit=job.limit,
            resume=job.resume, save_maps=job.save_maps or not job.evaluate or prepared.task is not None,
            workers=job.workers, shard_images=job.shard_size, model_name=job.model_name,
            class_names=loaded.class_names, settings=job.settings,
            on_start=announce if on_estimate is not None else None, task=prepared.task)
        page = None
        if rank == 0:
            page = write_dataset_report(job.out, result.summary, read_rows(job.out), result.manifest, loaded.model,
                                        data, loaded.preprocess, methods=methods, metric=job.gallery_metric,
                                        layer=result.manifest.get("layer_used"), options=job.options,
                                        batch_size=job.batch_size, seed=job.seed, task=prepared.task,
                                        class_names=loaded.class_names)
        return DatasetJobResult(result, page, rank, world)
    finally:
        if world > 1:
            dist.finish()


def _metric_rows(model: torch.nn.Module, x: torch.Tensor, maps: Mapping[str, Any], metrics: Sequence[str],
                 metric_options: Mapping[str, Any], batch_size: int | None, classes: int | None = None) -> int | None:
    """Rows the metrics put through the model for ``x``'s images, counted on a stand-in model that costs nothing
    (a linear read-out of the channel means with ``model``'s number of outputs): the metrics perturb and score
    as they would, only the model is free."""
    from interpretorch.core import track
    from interpretorch.metrics.evaluate import evaluate

    if classes is None:
        with torch.no_grad():
            classes = model(x[:1]).reshape(1, -1).shape[1]
    stand_in = _FreeModel(x.shape[1], classes).to(x.device)
    with torch.no_grad():
        outputs = stand_in(x)
    with track() as progress:  # the job passes the methods' outputs: no clean pass is counted
        evaluate(stand_in, x, maps, target=0, batch_size=batch_size, metrics=list(metrics), outputs=outputs,
                 **{k: v for k, v in metric_options.items()})
    return progress.done


class _FreeModel(torch.nn.Module):
    """A model of (almost) no cost: the channel means times a fixed matrix."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(channels, classes, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, classes) scores."""
        return x.mean((2, 3)) @ self.weight


def estimate_dataset_job(job: DatasetJob | Prepared) -> Estimate:
    """Expected rows and seconds of the job: each method's rows (its formula) and each metric's rows (counted
    on a blank image with a stand-in model) per image, times the images still to do, plus the report's gallery
    explained again (an upper bound: at most ``3 * PER_SECTION`` images) when the maps are not saved; timed by
    one forward / backward of the job's model."""
    from interpretorch.datasets.writer import finished_images
    from interpretorch.explanation import Explanation

    p = job if isinstance(job, Prepared) else prepare_dataset_job(job)
    if p.task is not None:
        return _estimate_task_job(p)
    job = p.job
    model, pre = p.loaded.model, p.loaded.preprocess
    done = finished_images(Path(job.out)) if job.resume and Path(job.out).is_dir() else set()
    n = sum(1 for r in p.data.records if r.index not in done)
    device = next((q.device for q in model.parameters()), torch.device(job.device))
    x = torch.zeros(1, 3, pre.size, pre.size, device=device)
    costs = estimate(model, x, p.methods, job.options, p.layer, job.batch_size)
    method_rows = sum(c.rows or 0 for c in costs)
    unknown = [c.method for c in costs if c.rows is None]
    forward = next((c.per_row for c in costs if c.runs == "forward"), None)
    both = next((c.per_row for c in costs if c.runs == "backward"), None)
    if forward is None or both is None:
        forward, both = time_per_row(model, x, job.batch_size)
    metric_rows = 0  # per image, all methods
    gallery = 0  # images the report explains again (evaluate without saved maps: best, worst and random ones)
    if job.evaluate:
        wanted = resolve_dataset_metrics(job.metrics, p.data.boxes is not None or p.data.masks is not None)
        skip = [m for m in wanted if m in NOT_COUNTED or "explain_fn" in get_metric(m).needs]
        unknown += skip
        counted = [m for m in wanted if m not in skip and m not in NO_ROWS]
        if counted:
            maps = {m: Explanation(torch.rand(1, pre.size, pre.size, generator=torch.Generator().manual_seed(0)
                                              ).to(device), m) for m in p.methods}
            metric_rows = _metric_rows(model, x, maps, counted, job.metric_options, job.batch_size)
        if any(per_image_metric(m) for m in wanted):
            metric_rows += 1  # the image-by-image metrics run their own clean pass per image
        if not job.save_maps:
            gallery = min(len(p.data.records), 3 * PER_SECTION)
    seconds = n * (sum(c.seconds or 0.0 for c in costs) + metric_rows * forward) \
        + gallery * sum(c.seconds or 0.0 for c in costs)
    parts = [(c.method, (n + gallery) * (c.seconds or 0.0)) for c in costs] + [("metrics", n * metric_rows * forward)]
    step = 0.1 if float(job.metric_options.get("deletion", {}).get("step", 0.01)) >= 0.05 else 0.05
    advice = {**SHORTER, "metrics": f"--option deletion.step={step} --option insertion.step={step} (a coarser "
                                    "step), --metrics with fewer metrics, or --limit N images"}
    return Estimate(n * (method_rows + metric_rows) + gallery * method_rows, seconds, device.type, tuple(unknown),
                    shorter_settings(parts, advice, seconds))


SAMPLE = 4  # images whose targets are counted to estimate a task job's targets per image


def _estimate_task_job(p: Prepared) -> Estimate:
    """Expected rows and seconds of a detection / segmentation job: per image one forward pass that finds its
    targets and ``explain_targets``' rows for them (``attribution.cost.estimate_targets``), per target the
    metrics' rows (their clean pass and their perturbations, counted on a stand-in model); the targets per image
    are those of the first ``SAMPLE`` images, scaled to the images still to do."""
    from interpretorch.attribution.cost import estimate_targets
    from interpretorch.core import track
    from interpretorch.datasets.streams import ImageStream, collate
    from interpretorch.datasets.tasks import clean_outputs, image_targets
    from interpretorch.datasets.writer import finished_images
    from interpretorch.explanation import Explanation

    job, model, pre = p.job, p.loaded.model, p.loaded.preprocess
    done = finished_images(Path(job.out)) if job.resume and Path(job.out).is_dir() else set()
    n = sum(1 for r in p.data.records if r.index not in done)
    device = next((q.device for q in model.parameters()), torch.device(job.device))
    stream = ImageStream(p.data, pre, p.data.records[:SAMPLE])
    batch = collate([stream[i] for i in range(len(stream))])
    x = pre.normalize(batch["image"]).to(device)
    with track():  # the sample's pass is the estimate's own, not a row of the job
        targets = [[t for t, _ in tg] for tg in image_targets(clean_outputs(model, x, job.batch_size), p.task)]
    est = estimate_targets(model, x, targets, p.methods, job.options, p.layer, job.batch_size)
    forward, _ = time_per_row(model, x[:1], job.batch_size)
    per_image = est.rows / len(targets) + 1  # + the forward pass that finds the targets
    k = sum(len(t) for t in targets) / len(targets)
    unknown = list(est.unknown)
    metric_rows = 0.0  # per target
    if job.evaluate:
        wanted = resolve_task_metrics(job.metrics)
        skip = [m for m in wanted if m in NOT_COUNTED or "explain_fn" in get_metric(m).needs]
        unknown += skip
        counted = [m for m in wanted if m not in skip and m not in NO_ROWS]
        one = x[:1]
        if counted:
            maps = {m: Explanation(torch.rand(1, *one.shape[-2:], generator=torch.Generator().manual_seed(0)
                                              ).to(device), m) for m in p.methods}
            metric_rows = _metric_rows(model, one, maps, counted, job.metric_options, job.batch_size, classes=2) or 0
        metric_rows += 1  # evaluate's clean pass of the target's row
    seconds = n * (est.seconds / len(targets) + forward + k * metric_rows * forward)
    parts = [("methods", n * est.seconds / len(targets)), ("metrics", n * k * metric_rows * forward)]
    advice = {"methods": "--limit N images, or a higher --score-threshold (fewer detections)",
              "metrics": "--metrics with fewer metrics, a coarser --option deletion.step, or --limit N images"}
    return Estimate(round(n * (per_image + k * metric_rows)), seconds, device.type, tuple(unknown),
                    shorter_settings(parts, advice, seconds))
