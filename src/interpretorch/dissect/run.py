"""Network Dissection (Bau et al. 2017) of one or more layers over a Broden-format dataset.

Two passes over the data, each serving every requested layer at once (NetDissect also needs two: the
thresholds must be known before any IoU can be counted):

1. **thresholds**: per unit the top-``quantile`` activation threshold (:class:`~interpretorch.core.runningstats.TopQuantile`, exact when
   it fits in memory) and, from the same pass, each unit's top-activating images (for the report). Only the
   images are read; the masks are not. While the activations of this process's images fit in ``cache_bytes``
   they are kept (as NetDissect-Lite keeps its feature files), so that the second pass runs no forward.
2. **IoU**: the activation, upsampled to the mask size and thresholded, is counted against every label
   (:class:`~interpretorch.core.runningstats.IoUTally`); each unit gets its best label overall and per category, and is a *detector*
   when its best IoU reaches ``iou_threshold``. With the cache only the masks are read; without it (too
   large, or a run resumed in this pass) the images are read and the model runs again.

Both passes checkpoint every ``checkpoint_every`` batches and resume; under ``torchrun`` (torch.distributed
initialised) each process takes every ``world``-th image and the statistics are reduced across processes, so
the counts equal a single-process run exactly. The passes, cache, checkpoints and reductions are the shared
driver :func:`interpretorch.core.tally.two_pass_tally`; this module gives it the Broden data source.
"""
from __future__ import annotations

import copy
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from interpretorch.capture import capture
from interpretorch.core import model_device, rows_per_pass
from interpretorch.core import world as _world
from interpretorch.core.runningstats import label_masks
from interpretorch.core.tally import LayerDissection, Labels, checkpoint_path, load_checkpoint, two_pass_tally
from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.runstate import files_fingerprint, model_fingerprint

# Fingerprint entries shown as "differs" rather than as two hashes when a resume is refused.
_HASHED = {"model": "the model's weights differ", "data": "the dataset's files differ"}

CHECKPOINT_VERSION = 2  # 2: the fingerprint covers the weights, the preprocessing and the data files


@dataclass
class Dissection:
    """The dissection of every requested layer over one dataset."""

    layers: dict[str, LayerDissection]
    quantile: float
    iou_threshold: float
    images: int
    skipped: list[str] = field(default_factory=list)  # index.csv paths of images that could not be decoded

    def summary(self) -> dict:
        """JSON-ready summary: settings and per layer the detector counts."""
        return {"quantile": self.quantile, "iou_threshold": self.iou_threshold, "images": self.images,
                "skipped_images": self.skipped,
                "layers": {n: ld.summary() for n, ld in self.layers.items()}}


def _tally_columns(categories: Sequence[str]) -> list[str]:
    cols = ["unit", "category", "label", "score"]
    for c in categories:
        cols += [f"{c}-label", f"{c}-truth", f"{c}-activation", f"{c}-intersect", f"{c}-iou"]
    return cols


def write_tally(layer: LayerDissection, path: str | Path) -> Path:
    """Write NetDissect-Lite's tally.csv for one layer (units from 0, best score first)."""
    path = Path(path)
    rows = sorted(layer.unit_rows(), key=lambda r: (-r["score"], r["unit"]))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_tally_columns(layer.categories))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return path


def write_summary(result: Dissection, path: str | Path) -> Path:
    """Write the JSON summary of a dissection."""
    path = Path(path)
    path.write_text(json.dumps(result.summary(), indent=2))
    return path


def data_fingerprint(dataset: BrodenDataset) -> str:
    """Hash of a Broden dataset's tables and of every image and mask file it uses (name, size, mtime)."""
    root = dataset.root
    files = [root / n for n in ("index.csv", "category.csv", "label.csv")]
    files += sorted(root.glob("c_*.csv"))
    for row in dataset.info.rows:
        files.append(row.image_path)
        files.extend(row.mask_paths)
    return files_fingerprint(files, root)


def dissect(model: nn.Module, dataset: BrodenDataset | str | Path, layers: Sequence[str] | str, *,
            quantile: float = 0.005, iou_threshold: float = 0.04, batch_size: int | None = None, workers: int = 0,
            checkpoint: str | Path | None = None, checkpoint_every: int = 20, resume: bool = False,
            top_images: int = 8, cache_bytes: int = 1 << 30,
            on_batch: Callable[[int, int], None] | None = None, settings: dict | None = None) -> Dissection:
    """Dissect ``layers`` of ``model`` over a Broden-format ``dataset``: thresholds, IoU and detectors per unit.

    ``checkpoint`` is a file written every ``checkpoint_every`` batches and at the end of each pass (one file
    per process under torch.distributed); ``resume`` continues from it, and refuses (ValueError) a checkpoint
    of other settings, other model weights, another preprocessing or changed data files.
    ``on_batch(pass_number, batches_done)`` is called after every batch (progress, or stopping a run).
    ``cache_bytes`` bounds the activations kept between the passes (0: none; the second pass then runs the
    model again). An image file that cannot be decoded is skipped, named on stderr and listed in
    ``Dissection.skipped``. The model is left as it was. ``settings`` (JSON-ready) join the checkpoint's
    fingerprint, so a resume under other settings of the caller's (a rotation's alpha and seed) is refused
    naming them.
    """
    if isinstance(dataset, (str, Path)):
        dataset = BrodenDataset(dataset)
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise ValueError("give at least one layer to dissect")
    if len(set(names)) != len(names):
        raise ValueError(f"layers are repeated: {names}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be positive, got {checkpoint_every}")
    if resume and checkpoint is None:
        raise ValueError("resume needs a checkpoint file")
    device = model_device(model)
    bs = rows_per_pass(batch_size, device)
    rank, world = _world()
    n = len(dataset)
    if n < world:
        raise ValueError(f"the dataset has {n} images, fewer than the {world} processes sharing it")
    if top_images < 1:
        raise ValueError(f"top_images must be positive, got {top_images}")
    mine = list(range(rank, n, world))
    info = dataset.info
    label_category = torch.full((info.num_labels,), -1, dtype=torch.long)
    for num, ci in info.label_category.items():
        label_category[num] = ci
    label_names = [info.label_names.get(i, f"#{i}") for i in range(info.num_labels)]
    fingerprint = {"version": CHECKPOINT_VERSION, "layers": names, "quantile": quantile, "images": n,
                   "rank": rank, "world": world, "batch_size": bs, "top_images": top_images,
                   "labels": info.num_labels, "categories": list(info.categories),
                   "model": model_fingerprint(model),
                   "preprocess": {"size": dataset.size, "mean": [float(v) for v in dataset.mean.flatten()],
                                  "std": [float(v) for v in dataset.std.flatten()]},
                   "data": data_fingerprint(dataset)}
    if settings:
        fingerprint.update(settings)
    ckpt = checkpoint_path(checkpoint)
    state = load_checkpoint(ckpt, fingerprint, resume, _HASHED)
    state.setdefault("skipped", [])
    skipped: list[int] = list(state["skipped"])  # this process's undecodable images (dataset indices)

    def readable(batch: dict) -> torch.Tensor:
        """Row positions of the batch's decodable images; the others are named (once) and remembered."""
        ok = []
        for k, (i, err) in enumerate(zip(batch["index"].tolist(), batch["error"])):
            if err is None and i not in skipped:
                ok.append(k)
            elif err is not None and i not in skipped:
                print(f"interpretorch: skipping {err}", file=sys.stderr)
                skipped.append(i)
        return torch.tensor(ok, dtype=torch.long)

    def loader(ds: BrodenDataset, skip_batches: int) -> DataLoader:
        sub = Subset(ds, mine[skip_batches * bs:])
        return DataLoader(sub, batch_size=bs, shuffle=False, num_workers=workers, collate_fn=collate,
                          persistent_workers=False)

    def forward(rec, images: torch.Tensor) -> dict[str, torch.Tensor]:
        rec.calls.clear()  # one recorder serves every batch
        rec.activations.clear()
        model(images.to(device, non_blocking=True))
        acts = {}
        for name in names:
            a = rec[name]
            if a.dim() != 4:
                raise ValueError(f"layer {name!r} gives activations of shape {tuple(a.shape)}; dissection needs "
                                 "(B, C, H, W) feature maps")
            acts[name] = a
        return acts

    images_only = copy.copy(dataset)
    images_only.labels = False
    labels_only = copy.copy(dataset)
    labels_only.images = False

    def pass1(start: int):
        for batch in loader(images_only, start):
            ok = readable(batch)
            yield None if len(ok) == 0 else (batch["index"][ok], forward(rec, batch["image"][ok]), {})

    def pass2(start: int, cache: list | None):
        for batch in loader(labels_only if cache is not None else dataset, start):
            ok = readable(batch)
            if len(ok) == 0:
                yield None
                continue
            acts = None if cache is not None else forward(rec, batch["image"][ok])
            pixel, labels = batch["pixel"][ok].to(device), batch["image_labels"][ok].to(device)
            yield Labels(pixel, labels, batch["categories"][ok], label_masks(pixel, labels, info.num_labels), acts)

    no_rows = (f"process {rank} of {world} got no images: the dataset has only {n}" if world > 1
               else "the dataset gave no images")
    with capture(model, names, grad=False) as rec, torch.no_grad():
        out = two_pass_tally(pass1, pass2, names, batches=-(-len(mine) // bs), total=n, quantile=quantile,
                             top_images=top_images, label_category=label_category,
                             num_categories=len(info.categories), device=device, state=state, checkpoint=ckpt,
                             checkpoint_every=checkpoint_every, cache_bytes=cache_bytes,
                             extra_state=lambda: {"skipped": list(skipped)}, on_batch=on_batch, no_rows=no_rows)
    thresholds, tallies, tops = out.thresholds, out.tallies, out.tops
    layers_out = {name: LayerDissection(name, thresholds[name].cpu(), tallies[name], label_names,
                                        list(info.categories), iou_threshold, tops[name].values.cpu(),
                                        tops[name].indices.cpu()) for name in names}
    every = [skipped]
    if world > 1:
        every = [None] * world
        torch.distributed.all_gather_object(every, skipped)
    names_skipped = [info.rows[i].image for i in sorted({i for part in every for i in part})]
    return Dissection(layers_out, quantile, iou_threshold, n - len(names_skipped), names_skipped)
