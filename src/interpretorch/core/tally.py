"""The two-pass tally both dissections run (Bau's ``tally(compute, dataset)``): per unit a top-quantile
threshold and top images over a stream, then the thresholded activations counted against concept masks.

:class:`LayerDissection` is one layer's result (thresholds, counts, IoU, best labels, detectors).
A family gives its data source as two generators; :func:`two_pass_tally` keeps the statistics
(:mod:`~interpretorch.core.runningstats`), caches pass 1's activations while they fit so pass 2 runs no
forward, checkpoints every ``checkpoint_every`` batches and resumes, and reduces across torch.distributed
processes (each process streams its own share; the counts equal a single-process run exactly).

- ``pass1(start)`` yields, for each of this process's batches from batch ``start`` on, ``None`` (a batch with
  no usable rows) or ``(indices, activations, keep)``: the rows' dataset indices (B,), ``{layer: (B, U, h, w)}``
  and a dict of extra CPU tensors the source wants back in pass 2 when the batch is cached (``{}`` if none).
- ``pass2(start, cache)`` yields, for each batch from ``start`` on, ``None`` or a :class:`Labels`. ``cache`` is
  None, or (every batch of pass 1 kept) a list of ``(activations, keep)`` per batch: then the source runs no
  model, may read its ``keep`` (``cache[b][1]``) and leaves ``activations`` None; the driver fills them in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from interpretorch.core.distributed import world as dist_world
from interpretorch.core.runningstats import IoUTally, TopImages, TopQuantile


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
class Labels:
    """One pass-2 batch's labels (see :meth:`IoUTally.update`) and, when not cached, its activations."""

    pixel: torch.Tensor
    image_labels: torch.Tensor
    categories: torch.Tensor
    masks: tuple | None = None
    activations: dict[str, torch.Tensor] | None = None


@dataclass
class TallyResult:
    """Per layer the thresholds (U,), the IoU counts and the top images; ``state`` is the checkpoint state."""

    thresholds: dict[str, torch.Tensor]
    tallies: dict[str, IoUTally]
    tops: dict[str, TopImages]
    state: dict = field(default_factory=dict)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def checkpoint_path(checkpoint: str | Path | None) -> Path | None:
    """This process's checkpoint file: ``checkpoint`` itself, or one file per rank under torch.distributed."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    rank, size = dist_world()
    return path.with_name(f"{path.name}.rank{rank}-of-{size}") if size > 1 else path


def load_checkpoint(path: Path | None, fingerprint: dict, resume: bool,
                    hashed: dict[str, str] | None = None) -> dict:
    """The state to start from: a fresh one, or (``resume`` and the file exists) the checkpoint's, refused with a
    ValueError naming the differing settings when its fingerprint is not ``fingerprint``. ``hashed`` maps keys
    shown as a sentence rather than two hashes."""
    state: dict = {"fingerprint": fingerprint, "pass": 1, "done": 0, "pass1": {}, "pass2": {}}
    if resume and path is not None and path.exists():
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(loaded, dict) or loaded.get("fingerprint") != fingerprint:
            old = loaded.get("fingerprint", {}) if isinstance(loaded, dict) else {}
            diff = {k: (hashed or {}).get(k, (old.get(k), v)) for k, v in fingerprint.items() if old.get(k) != v}
            raise ValueError(f"checkpoint {str(path)!r} is from a different run; differing settings "
                             f"(checkpoint, now): {diff}")
        state = loaded
    return state


def two_pass_tally(pass1: Callable[[int], Iterator], pass2: Callable[[int, bool], Iterator], layers: list[str], *,
                   batches: int, total: int, quantile: float, top_images: int, label_category: torch.Tensor,
                   num_categories: int, device: torch.device, state: dict | None = None,
                   checkpoint: Path | None = None, checkpoint_every: int = 20, cache_bytes: int = 0,
                   extra_state: Callable[[], dict] | None = None,
                   on_batch: Callable[[int, int], None] | None = None, no_rows: str = "the data gave no rows",
                   max_elements: int = 1 << 25, upsample: Callable | None = None) -> TallyResult:
    """Run (or resume from ``state``) the two passes over this process's ``batches`` batches of a ``total``-row
    stream and return thresholds, IoU counts and top images of every layer, reduced across processes.

    ``state`` comes from :func:`load_checkpoint`; ``checkpoint`` is written every ``checkpoint_every`` batches
    and at the end of each pass, with ``extra_state()`` merged in (a source's own resumable facts).
    ``on_batch(pass_number, batches_done)`` is called after every batch. ``max_elements`` and ``upsample`` are
    passed to :meth:`IoUTally.update`; ``no_rows`` is the ValueError's message when this process got no rows.
    """
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be positive, got {checkpoint_every}")
    state = state if state is not None else {"pass": 1, "done": 0, "pass1": {}, "pass2": {}}
    quant: dict[str, TopQuantile] = {}
    tops: dict[str, TopImages] = {}
    tallies: dict[str, IoUTally] = {}
    for name, sd in state["pass1"].items():
        quant[name] = TopQuantile(sd["quantile"]["units"], quantile, sd["quantile"]["capacity"], device)
        quant[name].load_state_dict(sd["quantile"])
        tops[name] = TopImages(sd["top"]["units"], top_images, device)
        tops[name].load_state_dict(sd["top"])

    def checkpoint_now(p: int, done: int) -> None:
        if checkpoint is None:
            return
        state.update({"pass": p, "done": done,
                      "pass1": {k: {"quantile": quant[k].state_dict(), "top": tops[k].state_dict()} for k in quant},
                      "pass2": {k: t.state_dict() for k, t in tallies.items()}})
        if extra_state is not None:
            state.update(extra_state())
        save_checkpoint(state, checkpoint)

    def finish_batch(p: int, done: int) -> None:
        if done % checkpoint_every == 0:
            checkpoint_now(p, done)
        if on_batch is not None:
            on_batch(p, done)

    cache: list[tuple[dict, dict]] | None = [] if cache_bytes > 0 and state["done"] == 0 else None
    if state["pass"] == 1:
        done = state["done"]
        for item in pass1(done):
            if item is None:
                if cache is not None:
                    cache.append(({}, {}))
            else:
                indices, acts, keep = item
                for name in layers:
                    a = acts[name]
                    if name not in quant:
                        quant[name] = TopQuantile(a.shape[1], quantile, total * a.shape[2] * a.shape[3], device)
                        tops[name] = TopImages(a.shape[1], top_images, device)
                    quant[name].update(a)
                    tops[name].update(a, indices)
                if cache is not None:
                    per_batch = sum(acts[k].numel() * acts[k].element_size() for k in layers) \
                        + sum(v.numel() * v.element_size() for v in keep.values())
                    if per_batch * batches <= cache_bytes:
                        cache.append(({k: acts[k].to("cpu", copy=True) for k in layers}, keep))
                    else:
                        cache = None
            done += 1
            finish_batch(1, done)
        if not quant:
            raise ValueError(no_rows)
        for name in layers:
            quant[name].all_reduce()
            tops[name].all_reduce()
        checkpoint_now(2, 0)
        state["pass"], state["done"] = 2, 0
    thresholds = {k: quant[k].thresholds() for k in layers}
    for name in layers:
        tallies[name] = IoUTally(quant[name].units, label_category, num_categories, device)
        if name in state["pass2"]:
            tallies[name].load_state_dict(state["pass2"][name])
    if state["pass"] == 2:
        done = state["done"]
        cached = cache if cache is not None and len(cache) == batches else None
        for item in pass2(done, cached):
            if item is not None:
                if cached is not None:
                    acts = {k: v.to(device, non_blocking=True) for k, v in cache[done][0].items()}
                else:
                    acts = item.activations
                for name in layers:
                    tallies[name].update(acts[name], thresholds[name], item.pixel, item.image_labels,
                                         item.categories, masks=item.masks, max_elements=max_elements,
                                         upsample=upsample)
            done += 1
            finish_batch(2, done)
        for name in layers:
            tallies[name].all_reduce()
        checkpoint_now(3, 0)
    return TallyResult(thresholds, tallies, tops, state)
