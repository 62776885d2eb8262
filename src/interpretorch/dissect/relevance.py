"""Reference images by relevance for dissected units (``dissect --relevance``; CRP's relevance maximisation).

Network Dissection shows each unit's top-*activating* images. Achtibat et al. (2023) argue for the images where
the unit was most *relevant* for the model's decision: the dataset is streamed once more (resumable) through
the LRP pass of :mod:`interpretorch.attribution.crp`, each image explained for its predicted class, and each
unit keeps the images where its relevance (summed over positions) was largest; the page shows them with the map
of where the unit mattered (the input relevance conditioned on the unit), beside the top-activating ones.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from interpretorch.attribution.crp import ReferenceImages, conditional_relevance, reference_images
from interpretorch.core import model_device, rows_per_pass
from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.dissect.run import data_fingerprint


def _batches(dataset: BrodenDataset, bs: int, device) -> Iterator[tuple[torch.Tensor, torch.Tensor, str]]:
    for s in range(0, len(dataset), bs):
        items = [dataset[i] for i in range(s, min(s + bs, len(dataset)))]
        items = [it for it in items if it["error"] is None] or items[:0]
        if items:
            b = collate(items)
            yield torch.tensor([it["index"] for it in items]), b["image"].to(device), "top1"


def _tile(img: np.ndarray, rel: np.ndarray | None) -> np.ndarray:
    """The image, with the positive (red) and negative (blue) relevance laid over it when given."""
    if rel is None:
        return img
    r = rel / _p99(rel)
    colour = np.zeros_like(img, dtype=np.float64)
    colour[..., 0] = np.clip(r, 0, 1) * 255
    colour[..., 2] = np.clip(-r, 0, 1) * 255
    alpha = np.clip(np.abs(r), 0, 1)[..., None] * 0.7
    return (img * (1 - alpha) + colour * alpha).astype(np.uint8)


def _p99(rel: np.ndarray) -> float:
    """The 99th percentile of |relevance| (the largest |value| when that is 0; 1 for an all-zero map)."""
    a = np.abs(rel)
    return float(np.percentile(a, 99.0)) or float(a.max()) or 1.0


def relevance_strips(model: nn.Module, dataset: BrodenDataset, layer: str, out_dir: str | Path, *,
                     units: Sequence[int] | None = None, n: int = 8, batch_size: int | None = None,
                     resume: bool = False, stem: str | None = None) -> tuple[list[dict], ReferenceImages]:
    """Per unit of ``units`` (default: all), its reference images chosen by relevance (drawn with where it
    mattered, each on its own scale, +-the 99th percentile of |relevance|) and by activation, saved as strips in
    ``<stem>_files``; returns ``{"unit", "strips": {kind: path}, "relevance": [values], "relevance_images",
    "activation_images"}`` per unit and the reference pass (checkpointed to ``<stem>_relevance.pt``)."""
    from PIL import Image

    out = Path(out_dir)
    stem = stem or layer.replace(".", "_")
    device = model_device(model)
    bs = rows_per_pass(batch_size, device)
    ref = reference_images(model, _batches(dataset, bs, device), layer, n=n,
                           checkpoint=out / f"{stem}_relevance.pt", resume=resume,
                           fingerprint=data_fingerprint(dataset))
    files = out / f"{stem}_files"
    files.mkdir(parents=True, exist_ok=True)
    rows = []
    for u in (range(ref.relevance_indices.shape[0]) if units is None else units):
        strips, chosen = {}, {}
        for kind, idx in (("relevance", ref.relevance_indices[u]), ("activation", ref.activation_indices[u])):
            idx = [int(i) for i in idx.tolist() if i >= 0]
            chosen[kind] = idx
            if not idx:
                continue
            maps = None
            if kind == "relevance":
                x = collate([dataset[i] for i in idx])["image"].to(device)
                maps = conditional_relevance(model, x, "top1", layer, [int(u)], batch_size=batch_size).heatmaps[:, 0]
            tiles = []
            for j, i in enumerate(idx):
                img = dataset.load_image(i)
                rel = None
                if maps is not None:
                    m = torch.nn.functional.interpolate(maps[j][None, None].float(), size=img.shape[:2],
                                                        mode="bilinear", align_corners=False)[0, 0]
                    rel = m.cpu().numpy()
                tiles.append(_tile(img, rel))
                tiles.append(np.full((img.shape[0], 3, 3), 255, np.uint8))
            name = f"unit{u:04d}_{kind}.png"
            Image.fromarray(np.concatenate(tiles[:-1], axis=1)).save(files / name)
            strips[kind] = f"{files.name}/{name}"
        rows.append({"unit": int(u), "strips": strips,
                     "relevance": [float(v) for v in ref.relevance_values[u].tolist()][:len(chosen["relevance"])],
                     "relevance_images": chosen["relevance"], "activation_images": chosen["activation"]})
    return rows, ref


def link_from(layer_page: Path, relevance_page: Path) -> None:
    """Add a link to the relevance page at the top of a dissect layer page."""
    text = layer_page.read_text(encoding="utf-8")
    link = (f"<p><a href=\"{html.escape(relevance_page.name)}\">Reference images by relevance (CRP)</a></p>")
    if link not in text:
        layer_page.write_text(text.replace("<body>", "<body>\n" + link, 1), encoding="utf-8")
