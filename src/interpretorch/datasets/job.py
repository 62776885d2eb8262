"""Explain (and evaluate) a whole dataset in batches: the registry's methods and the metrics of
``interpretorch.metrics.evaluate`` per batch, each batch's rows handed to the shard writer before the next
batch is read, so memory does not grow with the number of images. The same call runs in one process or
under ``torchrun`` (each rank its share and its own shards; rank 0 merges after a barrier).

Per-image results do not depend on how images are batched or sharded: the methods' noise is the same for
every image, and the metrics with random draws (ROAD's imputation noise, infidelity's perturbations,
max-sensitivity's noisy copies, every metric whose protocol has a seed) or that re-explain run image by image
with a seed derived from the image's position in the dataset and ``seed``. Metrics giving one value across a
set of images, or values relative to the other images (Sensitivity-N, sufficiency, consistency), depend on the
batching: named, they are refused; in a family, they are left out.
"""
from __future__ import annotations

import dataclasses
import json
import platform
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from interpretorch.attribution.registry import get_method, reexplainers, resolve_methods
from interpretorch.core import model_device, seed_for
from interpretorch.core.batching import rows_per_pass
from interpretorch.datasets import distributed as dist
from interpretorch.datasets.annotations import AnnotationError, resolve_labels
from interpretorch.datasets.streams import DatasetError, ImageSet, loader
from interpretorch.datasets.summary import BOOTSTRAP_RESAMPLES, summarize
from interpretorch.datasets.tasks import TASK_COLUMNS, TASK_METRICS, TaskSpec, explain_task_batch
from interpretorch.datasets.writer import (ShardWriter, finished_images, have_pyarrow, part_files, read_rows,
                                           recover_parts, remove_partial, shard_files, write_columns, write_json)
from interpretorch.explanation import Explanation
from interpretorch.metrics.evaluate import evaluate, resolve_metrics
from interpretorch.metrics.registry import CATEGORIES, get_metric
from interpretorch.models.preprocess import Preprocess
from interpretorch.run import run as run_methods
from interpretorch.runstate import FolderBusy, OutputLock, model_fingerprint, terminate_as_interrupt

MANIFEST_VERSION = 1
# Metrics that draw random numbers: evaluated image by image with a per-image seed (see the module doc).
NOISY = ("road", "infidelity", "max_sensitivity")
# Settings that must match for --resume to continue a run.
RESUME_KEYS = ("version", "model", "model_sha256", "methods", "metrics", "options", "metric_options", "target", "layer",
               "preprocess", "seed", "limit", "data", "task")


@dataclass
class DatasetRun:
    """What a dataset job produced: where, how many images, the summary (rank 0) and this process's timing."""

    out: Path
    images: int
    done_now: int
    failed: list[dict[str, Any]]
    summary: dict[str, Any] | None
    seconds: float
    rank: int = 0
    world: int = 1
    manifest: dict[str, Any] = field(default_factory=dict)


def per_image_metric(name: str) -> bool:
    """Whether a dataset job evaluates ``name`` image by image, with a seed of the image's own and the method
    that made each map to re-explain it: it draws random numbers or re-explains (see the module doc)."""
    m = get_metric(name)
    return name in NOISY or "explain_fn" in m.needs or "seed" in m.protocol


def metric_columns(metrics: Sequence[str] | None) -> list[str]:
    """The table columns of the resolved metric names ('road' gives road_morf and road_lerf)."""
    cols: list[str] = []
    for m in metrics or []:
        cols.extend(["road_morf", "road_lerf"] if m == "road" else [m])
    return cols


def resolve_dataset_metrics(metrics: str | Sequence[str] | None, localisation: bool) -> list[str]:
    """The metric names a dataset job computes; 'win' joins 'average_drop' (same pass); the pointing games need
    boxes or masks."""
    names = resolve_metrics(metrics)
    whole = [m for m in names if "image_set" in get_metric(m).needs]
    if whole:
        named = metrics is not None and metrics != "all" and any(
            get_metric(n).name in whole for n in ([metrics] if isinstance(metrics, str) else metrics)
            if n.strip().lower().replace("-", "_") not in CATEGORIES)
        if named:
            raise DatasetError(f"{', '.join(whole)}: its values depend on which images are evaluated together, so "
                               "a dataset run (whose figures may not depend on batching) cannot give them; run it "
                               "with evaluate on a chosen set of images")
        names = [m for m in names if m not in whole]
    if not localisation:
        missing = [m for m in ("pointing_game", "energy_pointing_game") if m in names]
        if missing and metrics is not None and metrics != "all":
            raise DatasetError(f"{', '.join(missing)} need the objects' locations: give --boxes or --masks")
        names = [m for m in names if m not in missing]
    if "average_drop" in names and "win" not in names:
        names.insert(names.index("average_drop") + 1, "win")
    return names


def resolve_task_metrics(metrics: str | Sequence[str] | None) -> list[str]:
    """The metric names a detection / segmentation dataset job computes: by default the pointing game, the
    energy pointing game and Deletion of each target; the metrics that need a set of images are refused as for
    classifiers. The localisation metrics always apply (a target's own object, or the true one)."""
    return resolve_dataset_metrics(list(TASK_METRICS) if metrics is None else metrics, True)


def task_labels(data: ImageSet, class_names: Sequence[str]) -> dict[str, tuple[int, ...]] | None:
    """Each annotated image's true objects as the model's class indices (None without an annotation file); a
    DatasetError names an object whose label is not one of the model's classes."""
    if data.annotations is None:
        return None
    try:
        return resolve_labels([data.annotations[r.path] for r in data.records], class_names)
    except AnnotationError as e:
        raise DatasetError(f"{data.annotation_file}: {e}") from None


def versions() -> dict[str, str]:
    """The versions of what produced the results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for pkg in ("interpretorch", "scipy", "pyarrow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _slice(exp: Explanation, i: int) -> Explanation:
    """Image ``i`` of an explanation, as a one-image Explanation."""
    def one(t: Any) -> Any:
        return t[i:i + 1] if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == len(exp) else t
    return dataclasses.replace(exp, maps=exp.maps[i:i + 1], target=one(exp.target), raw=one(exp.raw),
                               scores=one(exp.scores), outputs=one(exp.outputs))


def _noisy_options(metric_options: Mapping[str, Any], seed: int, names: Sequence[str]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in metric_options.items()}
    for name in names:
        m = get_metric(name)
        if name in NOISY or "seed" in m.protocol:
            out[m.options] = {**out.get(m.options, {}), "seed": seed}
    return out


def _check_resume(out: Path, manifest: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The manifest to continue (resume) or a fresh one; refuses to mix two different runs in one folder."""
    path = out / "manifest.json"
    old = json.loads(path.read_text()) if path.exists() else None
    if not resume:
        if shard_files(out) or shard_files(out, "maps") or part_files(out):
            raise DatasetError(f"{str(out)!r} holds the results of an earlier run: add --resume to continue it "
                               "or choose another --out")
        return manifest
    if old is None:
        if shard_files(out) or part_files(out):
            raise DatasetError(f"--resume: {str(out)!r} has shards but no manifest.json")
        return manifest
    diff = {k: (old.get(k), manifest.get(k)) for k in RESUME_KEYS if old.get(k) != manifest.get(k)}
    if diff:
        shown = {k: v for k, v in diff.items() if k not in ("data", "model_sha256")}
        if "data" in diff:
            shown["data"] = "the image list or the image files differ"
        if "model_sha256" in diff:
            shown["model_sha256"] = "the model's weights differ"
        raise DatasetError(f"--resume: {str(out)!r} is a run with other settings (earlier, now): {shown}")
    manifest["sessions"] = old.get("sessions", [])
    manifest["started"] = old.get("started", manifest["started"])
    return manifest


def explain_dataset(model: nn.Module, data: ImageSet, out: str | Path, *, preprocess: Preprocess,
                    methods: str | Sequence[str] | None = None, metrics: str | Sequence[str] | None = None,
                    evaluate_maps: bool = True, target: Any = "top1", layer: str | None = None,
                    batch_size: int | None = None, options: Mapping[str, Mapping[str, Any]] | None = None,
                    metric_options: Mapping[str, Any] | None = None, seed: int = 0, limit: int | None = None,
                    resume: bool = False, save_maps: bool = False, workers: int = 0,
                    images_per_batch: int | None = None, shard_images: int = 256, table_format: str | None = None,
                    model_name: str = "model", class_names: Sequence[str] = (), progress: bool = True,
                    bootstrap_resamples: int = BOOTSTRAP_RESAMPLES,
                    on_batch: Callable[[int, int], None] | None = None,
                    on_start: Callable[[], None] | None = None,
                    settings: Mapping[str, Any] | None = None, task: TaskSpec | None = None) -> DatasetRun:
    """Explain every image of ``data`` with ``methods`` and (``evaluate_maps``) score the maps with ``metrics``,
    writing per-image rows (and, with ``save_maps``, float16 maps) to shards in ``out`` as batches finish;
    rank 0 then merges them into ``per_image.parquet`` (or ``.csv``) and ``summary.json``.

    ``target``: "top1", a class index, or "label" (each image's own label). ``resume`` skips the images
    already on disk (the settings, the model's weights and the image list must match the manifest). Rank 0
    locks ``out`` for the whole run (a second writer gets a DatasetError); SIGTERM stops the run like Ctrl-C
    (a :class:`~interpretorch.runstate.Terminated` is raised after the finished batches are on disk).
    ``images_per_batch`` (default: the rows per model call) images are read per batch by ``workers``
    DataLoader processes. ``on_batch(batches, images)``
    is called after each batch's rows were handed to the writer; ``on_start()`` on rank 0 once the folder is locked
    and the settings checked, before the first batch (the CLI prints its estimate there). ``settings`` (the
    settings profile the caller chose: CPU or the papers') is recorded in the manifest and stated on the page.
    ``task`` (a :class:`~interpretorch.datasets.tasks.TaskSpec`): explain each image's detections or class
    regions instead of a class, one row per target (``datasets.tasks``); ``target`` is then "top1".
    """
    t_start = time.perf_counter()
    rank, size = dist.world()
    out = Path(out)
    device = model_device(model)
    names = resolve_methods(methods, model)
    if target == "label" and not data.has_labels:
        unl = next(r.path for r in data.records if r.label is None)
        raise DatasetError(f"--target label needs a label for every image; {unl!r} has none "
                           "(use an ImageFolder tree, a list with labels, or --labels FILE)")
    if not (target in ("top1", "label") or (isinstance(target, int) and not isinstance(target, bool))):
        raise DatasetError(f"target must be 'top1', 'label' or one class index for the whole dataset, got {target!r}")
    class_labels = None
    if task is not None:
        if target != "top1":
            what = "detections" if task.task == "detection" else "class regions"
            raise DatasetError(f"a {task.task} run explains each image's own {what}; leave out --target")
        if data.boxes is not None or data.masks is not None:
            raise DatasetError(f"a {task.task} run reads the true objects from an annotation file "
                               "(interpretorch.datasets.annotations), not from --boxes / --masks")
        wanted = resolve_task_metrics(metrics) if evaluate_maps else []
        class_labels = task_labels(data, class_names)
    else:
        localisation = data.boxes is not None or data.masks is not None
        wanted = resolve_dataset_metrics(metrics, localisation) if evaluate_maps else []
    columns = metric_columns(wanted)
    fmt = table_format or ("parquet" if have_pyarrow() else "csv")
    if len(data) < size:
        raise DatasetError(f"the dataset has {len(data)} images, fewer than the {size} processes sharing it")
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION, "model": model_name, "model_sha256": model_fingerprint(model),
        "methods": names, "metrics": wanted,
        "options": {m: dict(v) for m, v in (options or {}).items()},
        "metric_options": {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in (metric_options or {}).items()},
        "target": target, "layer": layer,
        "preprocess": {"size": preprocess.size, "mean": list(preprocess.mean), "std": list(preprocess.std)},
        "seed": seed, "limit": limit, "data": data.describe(), "format": fmt, "save_maps": save_maps,
        "settings": dict(settings) if settings else None, "task": None if task is None else task.describe(),
        "versions": versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "sessions": []}
    manifest = json.loads(json.dumps(manifest))  # as it reads back from disk (tuples -> lists), for --resume
    out.mkdir(parents=True, exist_ok=True)
    error: BaseException | None = None
    lock = OutputLock(out)
    if rank == 0:  # check and clean before any rank reads or writes
        try:
            try:
                lock.acquire()
            except FolderBusy as e:
                raise DatasetError(str(e)) from None
            manifest = _check_resume(out, manifest, resume)
            remove_partial(out)
            recover_parts(out, fmt)
            write_json(out / "manifest.json", manifest)
        except BaseException as e:  # noqa: BLE001 - re-raised below, after the other ranks were told
            error = e
    if size > 1:
        flag = [error is None]
        torch.distributed.broadcast_object_list(flag, src=0)
        if not flag[0]:
            if error is not None:
                lock.release()
                raise error
            raise DatasetError("rank 0 refused the run (see its message)")
    elif error is not None:
        lock.release()
        raise error
    try:
        if on_start is not None and rank == 0:
            on_start()
        with terminate_as_interrupt():
            return _run_batches(model, data, out, manifest, preprocess=preprocess, names=names, wanted=wanted,
                                columns=columns, fmt=fmt, target=target, layer=layer, batch_size=batch_size,
                                options=options, metric_options=metric_options, seed=seed, resume=resume,
                                save_maps=save_maps, workers=workers, images_per_batch=images_per_batch,
                                shard_images=shard_images, model_name=model_name, class_names=class_names,
                                progress=progress, bootstrap_resamples=bootstrap_resamples, on_batch=on_batch,
                                t_start=t_start, task=task, class_labels=class_labels)
    finally:
        lock.release()


def _run_batches(model: nn.Module, data: ImageSet, out: Path, manifest: dict[str, Any], *, preprocess: Preprocess,
                 names: list[str], wanted: list[str], columns: list[str], fmt: str, target: Any, layer: str | None,
                 batch_size: int | None, options: Mapping[str, Mapping[str, Any]] | None,
                 metric_options: Mapping[str, Any] | None, seed: int, resume: bool, save_maps: bool, workers: int,
                 images_per_batch: int | None, shard_images: int, model_name: str, class_names: Sequence[str],
                 progress: bool, bootstrap_resamples: int, on_batch: Callable[[int, int], None] | None,
                 t_start: float, task: TaskSpec | None = None,
                 class_labels: Mapping[str, Sequence[int]] | None = None) -> DatasetRun:
    """The batches, the merge and the summary of :func:`explain_dataset` (settings checked, ``out`` locked)."""
    rank, size = dist.world()
    device = model_device(model)
    done = finished_images(out) if resume else set()
    dist.barrier()  # every rank has listed the finished shards before any writes a new one
    remaining = [r for r in data.records if r.index not in done]
    mine = dist.shard(remaining, rank, size)
    per_batch = images_per_batch or rows_per_pass(batch_size, device)
    writer = ShardWriter(out, rank, (list(TASK_COLUMNS) if task is not None else []) + columns, fmt=fmt,
                         shard_images=shard_images, save_maps=save_maps)
    failed: list[dict[str, Any]] = []
    from tqdm import tqdm

    bar = tqdm(total=len(mine), unit="img", desc=f"rank {rank}/{size}" if size > 1 else "images",
               disable=not progress or rank != 0, file=sys.stderr, smoothing=0.1)
    resolved_layer = layer
    batches = 0
    t_loop, cpu_loop = time.perf_counter(), time.process_time()
    try:
        for batch in (loader(data, preprocess, mine, per_batch, workers) if mine else []):
            rows, images = [], list(batch["index"])
            good = [k for k, e in enumerate(batch["error"]) if e is None]
            for k, e in enumerate(batch["error"]):
                if e is not None:
                    print(f"interpretorch: skipping {batch['path'][k]}: {e}", file=sys.stderr)
                    failed.append({"image": batch["index"][k], "path": batch["path"][k], "error": e})
                    rows.append({"image": batch["index"][k], "path": batch["path"][k], "error": e})
            maps_np: dict[str, np.ndarray] = {}
            map_units = [batch["index"][k] for k in good]
            if good and task is not None:
                rows_good, maps_np, map_units = _explain_task_batch(
                    model, batch, good, preprocess, task, names, wanted, resolved_layer, batch_size, options or {},
                    metric_options or {}, seed, save_maps, class_labels)
                rows.extend(rows_good)
            elif good:
                rows_good, maps_np, resolved_layer = _explain_batch(
                    model, batch, good, preprocess, names, wanted, target, resolved_layer, batch_size,
                    options or {}, metric_options or {}, seed, save_maps, class_names)
                rows.extend(rows_good)
            writer.add(rows, images, maps_np, map_units)
            batches += 1
            bar.update(len(images))
            if on_batch is not None:
                on_batch(batches, writer.written)
    except BaseException:  # Ctrl-C or an error: keep the finished batches on disk for --resume
        writer.close()
        raise
    finally:
        bar.close()
    writer.close()
    seconds = time.perf_counter() - t_loop
    stats = {"rank": rank, "world": size, "images": len(mine), "seconds": seconds,
             "cpu_seconds": time.process_time() - cpu_loop,
             "images_per_second": len(mine) / seconds if seconds > 0 else None,
             "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    write_json(out / "shards" / f"stats-r{rank:03d}.json", stats)
    dist.barrier()  # every rank's shards are on disk
    summary = None
    if rank == 0:
        table = read_rows(out)
        if not table:
            raise DatasetError("no image was processed")
        all_failed = [{"image": i, "path": p, "error": e}
                      for i, p, e in zip(table["image"], table["path"], table["error"]) if e is not None]
        write_columns(table, out / f"per_image.{'parquet' if fmt == 'parquet' else 'csv'}", fmt)
        if wanted and task is not None:
            summary = _task_summary(table, names, columns, task, seed, bootstrap_resamples,
                                    class_labels is not None)
            summary["model"] = model_name
            write_json(out / "summary.json", summary)
        elif wanted:
            summary = summarize(table, names, columns, seed=seed, n_resamples=bootstrap_resamples,
                                kinds={m: get_method(m).kind for m in names})
            summary["model"] = model_name
            write_json(out / "summary.json", summary)
        ranks = [json.loads(p.read_text()) for p in sorted((out / "shards").glob("stats-r*.json"))]
        manifest["sessions"].append({"world": size, "images": sum(s["images"] for s in ranks),
                                     "seconds": max(s["seconds"] for s in ranks), "ranks": ranks,
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        manifest["layer_used"] = resolved_layer
        manifest["images_done"] = len(set(table["image"]))
        manifest["failed"] = len(all_failed)
        write_json(out / "manifest.json", manifest)
        failed = all_failed
    return DatasetRun(out, len(data), len(mine), failed, summary, time.perf_counter() - t_start, rank, size, manifest)


def _explain_task_batch(model: nn.Module, batch: dict[str, Any], good: list[int], preprocess: Preprocess,
                        task: TaskSpec, names: list[str], wanted: list[str], layer: str | None,
                        batch_size: int | None, options: Mapping[str, Mapping[str, Any]],
                        metric_options: Mapping[str, Any], seed: int, save_maps: bool,
                        class_labels: Mapping[str, Sequence[int]] | None
                        ) -> tuple[list[dict], dict[str, np.ndarray], list[int]]:
    """The targets of the readable images of one batch (``datasets.tasks``): rows, maps and their units."""
    x = preprocess.normalize(batch["image"][torch.tensor(good)]).to(model_device(model))
    noisy = [m for m in wanted if per_image_metric(m)]
    try:
        return explain_task_batch(model, batch, good, x, task, names, wanted, noisy, layer, batch_size, options,
                                  metric_options, lambda image, k: _noisy_options(metric_options,
                                                                                  seed_for(seed, image, k), noisy),
                                  save_maps, class_labels)
    except (TypeError, ValueError) as e:  # an output the task cannot read, a class out of range: one line
        raise DatasetError(f"--task {task.task}: {e}") from None


def _task_summary(table: Mapping[str, list], names: list[str], columns: list[str], task: TaskSpec, seed: int,
                  n_resamples: int, truth: bool) -> dict[str, Any]:
    """The summary of a task run: the statistics over targets (each row's unit), and what the targets were."""
    keep = [i for i, u in enumerate(table["unit"]) if u is not None]
    units = {c: [v[i] for i in keep] for c, v in table.items()}
    units["cluster"] = units["image"]  # the targets of one image share it: intervals and tests resample images
    units["image"] = units.pop("unit")
    what = "detection(s)" if task.task == "detection" else "class region(s)"
    summary = summarize(units, names, columns, seed=seed, n_resamples=n_resamples,
                        kinds={m: get_method(m).kind for m in names}, unit=what, cluster="cluster")
    ok = [i for i, e in enumerate(table["error"]) if e is None]
    images = {table["image"][i] for i in ok}
    with_targets = {table["image"][i] for i in ok if table["unit"][i] is not None}
    first = names[0]
    matched = sum(1 for i in keep if table["method"][i] == first and table["truth_iou"][i] is not None
                  and (task.task != "detection" or table["truth_iou"][i] >= task.iou))
    summary["task"] = {**task.describe(), "unit": what, "targets": summary["images"], "images": len(images),
                       "images_without_targets": len(images - with_targets),
                       "objects": "ground truth" if truth else "own",
                       "matched": matched if truth else None}
    return summary


def _explain_batch(model: nn.Module, batch: dict[str, Any], good: list[int], preprocess: Preprocess,
                   names: list[str], wanted: list[str], target: Any, layer: str | None, batch_size: int | None,
                   options: Mapping[str, Mapping[str, Any]], metric_options: Mapping[str, Any], seed: int,
                   save_maps: bool, class_names: Sequence[str]) -> tuple[list[dict], dict[str, np.ndarray], str | None]:
    """Explain and evaluate the readable images of one batch: (rows, maps per method, the layer used)."""
    device = model_device(model)
    sel = torch.tensor(good)
    x = preprocess.normalize(batch["image"][sel]).to(device)
    index = [batch["index"][k] for k in good]
    labels = batch["label"][sel]
    tgt: Any = labels.to(device) if target == "label" else target
    res = run_methods(model, x, names, tgt, layer, batch_size=batch_size, options=options,
                      class_names=list(class_names) or None)
    exps = res.explanations
    evaluation: dict[str, dict] = {}
    det = [m for m in wanted if not per_image_metric(m)]
    if det:
        boxes = [batch["boxes"][k] for k in good] if "boxes" in batch else None
        masks = batch["mask"][sel].to(device) if "mask" in batch else None
        evaluation = evaluate(model, x, exps, target=tgt, batch_size=batch_size, boxes=boxes, masks=masks,
                              metrics=det, outputs=res.outputs, **{k: v for k, v in metric_options.items()})
    noisy = [m for m in wanted if per_image_metric(m)]
    per_image_noisy: list[dict[str, dict]] = []
    for i in range(len(good) if noisy else 0):
        one = {m: _slice(e, i) for m, e in exps.items()}
        t_i = tgt[i:i + 1] if isinstance(tgt, torch.Tensor) else tgt
        per_image_noisy.append(evaluate(model, x[i:i + 1], one, target=t_i, batch_size=batch_size, metrics=noisy,
                                        **{"explain_fn": reexplainers(one),
                                           **_noisy_options(metric_options, seed_for(seed, index[i]), noisy)}))
    rows = []
    for i, k in enumerate(good):
        for m in names:
            e = exps[m]
            pred = res.predictions[i][0] if res.predictions[i] else None
            row = {"image": index[i], "path": batch["path"][k],
                   "label": None if int(batch["label"][k]) < 0 else int(batch["label"][k]), "method": m,
                   "target": None if e.target is None else int(e.target[i]),
                   "pred": None if pred is None else pred["index"], "pred_prob": None if pred is None else pred["prob"],
                   "error": None}
            for col, entry in evaluation.get(m, {}).items():
                if col != "target":
                    row[col] = entry["per_image"][i]
            if per_image_noisy:
                for col, entry in per_image_noisy[i][m].items():
                    if col != "target":
                        row[col] = entry["per_image"][0]
            rows.append(row)
    maps = {m: e.map2d().detach().float().cpu().numpy() for m, e in exps.items()} if save_maps else {}
    return rows, maps, res.layer
