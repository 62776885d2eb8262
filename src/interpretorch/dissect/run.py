"""Network Dissection (Bau et al. 2017) of one or more layers over a Broden-format dataset.

Two passes over the data, each serving every requested layer at once (NetDissect also needs two: the
thresholds must be known before any IoU can be counted):

1. **thresholds**: per unit the top-``quantile`` activation threshold (:class:`~.stats.TopQuantile`, exact when
   it fits in memory) and, from the same pass, each unit's top-activating images (for the report). Only the
   images are read; the masks are not. While the activations of this process's images fit in ``cache_bytes``
   they are kept (as NetDissect-Lite keeps its feature files), so that the second pass runs no forward.
2. **IoU**: the activation, upsampled to the mask size and thresholded, is counted against every label
   (:class:`~.stats.IoUTally`); each unit gets its best label overall and per category, and is a *detector*
   when its best IoU reaches ``iou_threshold``. With the cache only the masks are read; without it (too
   large, or a run resumed in this pass) the images are read and the model runs again.

Both passes checkpoint every ``checkpoint_every`` batches and resume; under ``torchrun`` (torch.distributed
initialised) each process takes every ``world``-th image and the statistics are reduced across processes, so
the counts equal a single-process run exactly.
"""
from __future__ import annotations

import copy
import csv
import json
import os
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
from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.dissect.stats import IoUTally, TopImages, TopQuantile, label_masks
from interpretorch.runstate import files_fingerprint, model_fingerprint

# Fingerprint entries shown as "differs" rather than as two hashes when a resume is refused.
_HASHED = {"model": "the model's weights differ", "data": "the dataset's files differ"}

CHECKPOINT_VERSION = 2  # 2: the fingerprint covers the weights, the preprocessing and the data files


@dataclass
class LayerDissection:
    """Dissection of one layer: thresholds, counts, IoU and each unit's best label."""

    layer: str
    thresholds: torch.Tensor              # (U,)
    tally: IoUTally
    label_names: list[str]                # by global label number (0 = unlabelled)
    categories: list[str]
    iou_threshold: float
    top_values: torch.Tensor              # (U, n) peak activations of the top images
    top_indices: torch.Tensor             # (U, n) dataset indices of the top images
    iou: torch.Tensor = field(init=False)  # (U, L)

    def __post_init__(self) -> None:
        self.iou = self.tally.iou().cpu()

    @property
    def units(self) -> int:
        """Number of units (channels) of the layer."""
        return self.tally.units

    def best(self, category: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit the best label number and its IoU, over all labels or those of one category index."""
        iou = self.iou.clone()
        cat = self.tally.label_category.cpu()
        keep = cat >= 0 if category is None else cat == category
        iou[:, ~keep] = -1.0
        value, label = iou.max(dim=1)
        return label, value.clamp(min=0.0)

    def unit_rows(self) -> list[dict]:
        """One dict per unit: best label / category / IoU and, per category, its best label's counts."""
        label, score = self.best()
        cat_of = self.tally.label_category.cpu()
        per_cat = [self.best(ci) for ci in range(len(self.categories))]
        rows = []
        for u in range(self.units):
            row = {"unit": u, "category": self.categories[int(cat_of[label[u]])], "label": self.label_names[label[u]],
                   "score": float(score[u])}
            for ci, cname in enumerate(self.categories):
                lab, val = per_cat[ci]
                lab_u = int(lab[u])
                row[f"{cname}-label"] = self.label_names[lab_u]
                row[f"{cname}-truth"] = int(self.tally.truth[lab_u])
                row[f"{cname}-activation"] = int(self.tally.activation[u, ci])
                row[f"{cname}-intersect"] = int(self.tally.intersect[u, lab_u])
                row[f"{cname}-iou"] = float(val[u])
            rows.append(row)
        return rows

    def detectors(self) -> list[dict]:
        """Units whose best IoU reaches ``iou_threshold``: unit, label, category, iou (best first)."""
        label, score = self.best()
        cat_of = self.tally.label_category.cpu()
        out = [{"unit": u, "label": self.label_names[label[u]], "category": self.categories[int(cat_of[label[u]])],
                "iou": float(score[u])} for u in range(self.units) if float(score[u]) >= self.iou_threshold]
        return sorted(out, key=lambda d: (-d["iou"], d["unit"]))

    def summary(self) -> dict:
        """Counts for the report: detectors per category, unique concepts, detectors per concept."""
        det = self.detectors()
        per_cat = {c: sum(d["category"] == c for d in det) for c in self.categories}
        concepts: dict[str, int] = {}
        for d in det:
            key = f"{d['category']}/{d['label']}"
            concepts[key] = concepts.get(key, 0) + 1
        return {"layer": self.layer, "units": self.units, "detectors": len(det), "iou_threshold": self.iou_threshold,
                "detectors_per_category": per_cat,
                "unique_concepts": len(concepts),
                "unique_concepts_per_category": {c: sum(k.startswith(c + "/") for k in concepts)
                                                 for c in self.categories},
                "detectors_per_concept": dict(sorted(concepts.items(), key=lambda kv: (-kv[1], kv[0])))}


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


def _save(state: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
            on_batch: Callable[[int, int], None] | None = None) -> Dissection:
    """Dissect ``layers`` of ``model`` over a Broden-format ``dataset``: thresholds, IoU and detectors per unit.

    ``checkpoint`` is a file written every ``checkpoint_every`` batches and at the end of each pass (one file
    per process under torch.distributed); ``resume`` continues from it, and refuses (ValueError) a checkpoint
    of other settings, other model weights, another preprocessing or changed data files.
    ``on_batch(pass_number, batches_done)`` is called after every batch (progress, or stopping a run).
    ``cache_bytes`` bounds the activations kept between the passes (0: none; the second pass then runs the
    model again). An image file that cannot be decoded is skipped, named on stderr and listed in
    ``Dissection.skipped``. The model is left as it was.
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
    ckpt = None
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if world > 1:
            ckpt = ckpt.with_name(f"{ckpt.name}.rank{rank}-of-{world}")
    state: dict = {"fingerprint": fingerprint, "pass": 1, "done": 0, "pass1": {}, "pass2": {}, "skipped": []}
    if resume and ckpt is not None and ckpt.exists():
        loaded = torch.load(ckpt, map_location="cpu", weights_only=True)
        if loaded.get("fingerprint") != fingerprint:
            old = loaded.get("fingerprint", {}) if isinstance(loaded, dict) else {}
            diff = {k: _HASHED.get(k, (old.get(k), v)) for k, v in fingerprint.items() if old.get(k) != v}
            raise ValueError(f"checkpoint {str(ckpt)!r} is from a different run; differing settings "
                             f"(checkpoint, now): {diff}")
        state = loaded
    skipped: list[int] = list(state.get("skipped", []))  # this process's undecodable images (dataset indices)

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

    quant: dict[str, TopQuantile] = {}
    tops: dict[str, TopImages] = {}
    for name, sd in state["pass1"].items():
        quant[name] = TopQuantile(sd["quantile"]["units"], quantile, sd["quantile"]["capacity"], device)
        quant[name].load_state_dict(sd["quantile"])
        tops[name] = TopImages(sd["top"]["units"], top_images, device)
        tops[name].load_state_dict(sd["top"])

    def checkpoint_now(p: int, done: int) -> None:
        if ckpt is None:
            return
        state.update({"pass": p, "done": done, "skipped": list(skipped),
                      "pass1": {k: {"quantile": quant[k].state_dict(), "top": tops[k].state_dict()} for k in quant},
                      "pass2": {k: t.state_dict() for k, t in tallies.items()}})
        _save(state, ckpt)

    def loader(ds: BrodenDataset, skip_batches: int) -> DataLoader:
        sub = Subset(ds, mine[skip_batches * bs:])
        return DataLoader(sub, batch_size=bs, shuffle=False, num_workers=workers, collate_fn=collate,
                          persistent_workers=False)

    def forward(rec, images: torch.Tensor) -> None:
        rec.calls.clear()  # one recorder serves every batch
        rec.activations.clear()
        model(images.to(device, non_blocking=True))

    def activations(rec, name: str) -> torch.Tensor:
        a = rec[name]
        if a.dim() != 4:
            raise ValueError(f"layer {name!r} gives activations of shape {tuple(a.shape)}; dissection needs "
                             "(B, C, H, W) feature maps")
        return a

    tallies: dict[str, IoUTally] = {}
    images_only = copy.copy(dataset)
    images_only.labels = False
    labels_only = copy.copy(dataset)
    labels_only.images = False
    cache: list[dict[str, torch.Tensor]] | None = [] if cache_bytes > 0 and state["done"] == 0 else None
    with capture(model, names, grad=False) as rec, torch.no_grad():
        if state["pass"] == 1:
            done = state["done"]
            for batch in loader(images_only, done):
                ok = readable(batch)
                if len(ok) == 0:
                    if cache is not None:
                        cache.append({})
                    done += 1
                    if done % checkpoint_every == 0:
                        checkpoint_now(1, done)
                    if on_batch is not None:
                        on_batch(1, done)
                    continue
                forward(rec, batch["image"][ok])
                batch["index"] = batch["index"][ok]
                for name in names:
                    a = activations(rec, name)
                    if name not in quant:
                        cap = n * a.shape[2] * a.shape[3]
                        quant[name] = TopQuantile(a.shape[1], quantile, cap, device)
                        tops[name] = TopImages(a.shape[1], top_images, device)
                    quant[name].update(a)
                    tops[name].update(a, batch["index"])
                if cache is not None:
                    per_batch = sum(rec[k].numel() * rec[k].element_size() for k in names)
                    if per_batch * -(-len(mine) // bs) <= cache_bytes:
                        cache.append({k: rec[k].to("cpu", copy=True) for k in names})
                    else:
                        cache = None
                done += 1
                if done % checkpoint_every == 0:
                    checkpoint_now(1, done)
                if on_batch is not None:
                    on_batch(1, done)
            if not quant:
                if world > 1:
                    raise ValueError(f"process {rank} of {world} got no images: the dataset has only {n}")
                raise ValueError("the dataset gave no images")
            for name in names:
                quant[name].all_reduce()
                tops[name].all_reduce()
            checkpoint_now(2, 0)
            state["pass"], state["done"] = 2, 0
        thresholds = {k: quant[k].thresholds() for k in names}
        for name in names:
            tallies[name] = IoUTally(quant[name].units, label_category, len(info.categories), device)
            if name in state["pass2"]:
                tallies[name].load_state_dict(state["pass2"][name])
        if state["pass"] == 2:
            done = state["done"]
            cached = cache is not None and len(cache) == -(-len(mine) // bs)
            for batch in loader(labels_only if cached else dataset, done):
                ok = readable(batch)
                if len(ok) > 0:
                    if cached:
                        acts = {k: v.to(device, non_blocking=True) for k, v in cache[done].items()}
                    else:
                        forward(rec, batch["image"][ok])
                        acts = {k: activations(rec, k) for k in names}
                    pixel, labels = batch["pixel"][ok].to(device), batch["image_labels"][ok].to(device)
                    masks = label_masks(pixel, labels, info.num_labels)
                    for name in names:
                        tallies[name].update(acts[name], thresholds[name], pixel, labels,
                                             batch["categories"][ok], masks=masks)
                done += 1
                if done % checkpoint_every == 0:
                    checkpoint_now(2, done)
                if on_batch is not None:
                    on_batch(2, done)
            for name in names:
                tallies[name].all_reduce()
            checkpoint_now(3, 0)
    layers_out = {name: LayerDissection(name, thresholds[name].cpu(), tallies[name], label_names,
                                        list(info.categories), iou_threshold, tops[name].values.cpu(),
                                        tops[name].indices.cpu()) for name in names}
    every = [skipped]
    if world > 1:
        every = [None] * world
        torch.distributed.all_gather_object(every, skipped)
    names_skipped = [info.rows[i].image for i in sorted({i for part in every for i in part})]
    return Dissection(layers_out, quantile, iou_threshold, n - len(names_skipped), names_skipped)
