"""GAN Dissection (Bau et al. 2019): label each unit of a generator's layers by the IoU of its thresholded
activation with a segmentation of the generated images.

For ``samples`` seeded latent vectors, streamed in batches: the generator runs once with the layers recorded
(:func:`interpretorch.capture.capture`), the segmenter labels every pixel of the generated image with its
arg-max class, each unit's top-``quantile`` threshold is estimated with the dissection's streaming estimator
(:class:`~interpretorch.core.runningstats.TopQuantile`), and the activation, upsampled to the image and
thresholded, is counted against every segmented concept (:class:`~interpretorch.core.runningstats.IoUTally`).
Every generated image counts for every concept (the paper's IoU over all samples). While the activations and
segmentations fit in ``cache_bytes`` the second step reads them from memory; otherwise the generator and
segmenter run again on the same z. Under ``torchrun`` each process takes every ``world``-th sample and the
statistics are reduced, as in :func:`interpretorch.dissect.dissect`: both run the driver
:func:`interpretorch.core.tally.two_pass_tally`, each with its own data source. The upsampling is
:func:`~interpretorch.core.runningstats.upsample_units` (why not ``explanation.upsample``: see there).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from interpretorch.capture import capture, frozen, spatial_layers
from interpretorch.core import model_device, rows_per_pass
from interpretorch.core import world as _world
from interpretorch.core.runningstats import upsample_units
from interpretorch.core.tally import LayerDissection, Labels, two_pass_tally


def sample_z(n: int, z_shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """The ``n`` latent samples (n, *z_shape) of stream ``seed``; the first k do not depend on n."""
    if n < 1:
        raise ValueError(f"the number of samples must be positive, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    per = 1
    for s in z_shape:
        per *= int(s)
    # drawn in fixed blocks of 1024 rows so a prefix of the stream is the same whatever n is
    blocks = [torch.randn(1024, per, generator=g) for _ in range(-(-n // 1024))]
    return torch.cat(blocks)[:n].reshape(n, *z_shape)


def segment(segmenter: nn.Module, images: torch.Tensor, classes: int) -> torch.Tensor:
    """Per-pixel arg-max class (B, H, W) of ``segmenter``'s (B, K, H, W) logits for ``images``."""
    logits = segmenter(images)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or logits.shape[0] != images.shape[0] \
            or logits.shape[1] != classes:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the segmenter must return (B, {classes}, H, W) logits (one channel per class name) for "
                         f"{images.shape[0]} images, got {shape}")
    if not torch.isfinite(logits.sum()) and not torch.isfinite(logits).all():  # one reduction when all is well
        raise ValueError("the segmenter's logits contain NaN or infinity")
    return logits.argmax(dim=1)


def check_images(images: object, batch: int) -> torch.Tensor:
    """The generator's output, checked to be finite (B, C, H, W) images."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != batch:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"the generator must return images (B, C, H, W) for {batch} latent samples, got {shape}")
    if not torch.isfinite(images.sum()) and not torch.isfinite(images).all():
        raise ValueError("the generator's images contain NaN or infinity")
    return images


def default_layers(generator: nn.Module, z_shape: Sequence[int]) -> list[str]:
    """The middle layer of a generator: of its modules giving (B, C, H, W) maps before the image, the middle one."""
    device = model_device(generator)
    found = spatial_layers(generator, torch.zeros(1, *z_shape, device=device))
    runs: list[tuple[str, tuple[int, ...]]] = []
    for n, shape in found:
        # hooks fire innermost first: of a run of modules giving the same map (conv, BN, ReLU, their block)
        # keep the last, the outermost block
        if runs and runs[-1][1] == shape:
            runs[-1] = (n, shape)
        else:
            runs.append((n, shape))
    names = [n for n, shape in runs if shape[1] > 4 and shape[2] * shape[3] > 1]
    if not names:
        raise ValueError("the generator has no module giving a (B, C, H, W) feature map; name --layers")
    return [names[(len(names) - 1) // 2]]


@dataclass
class GANDissection:
    """Dissection of a generator's layers over ``samples`` seeded latent samples."""

    layers: dict[str, LayerDissection]
    classes: list[str]
    samples: int
    seed: int
    quantile: float
    iou_threshold: float
    concept_pixels: torch.Tensor  # (K,) pixels segmented as each class over all samples

    def concept_index(self, concept: str) -> int:
        """Index of a class name, or a ValueError naming the classes."""
        if concept not in self.classes:
            raise ValueError(f"unknown concept {concept!r}; the segmenter's classes are {self.classes}")
        return self.classes.index(concept)

    def concept_iou(self, layer: str, concept: str) -> torch.Tensor:
        """(U,) IoU of every unit of ``layer`` with ``concept``."""
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} was not dissected; dissected: {list(self.layers)}")
        return self.layers[layer].iou[:, self.concept_index(concept) + 1].clone()

    def top_units(self, layer: str, concept: str, k: int) -> list[int]:
        """The ``k`` units of ``layer`` with the highest IoU with ``concept`` (ties: lower unit first)."""
        iou = self.concept_iou(layer, concept)
        if not 1 <= k <= iou.numel():
            raise ValueError(f"k={k} units asked for, but layer {layer!r} has {iou.numel()} units")
        order = sorted(range(iou.numel()), key=lambda u: (-float(iou[u]), u))
        return order[:k]

    def summary(self) -> dict:
        """JSON-ready summary: settings, pixel share per concept, and per layer detectors and top units."""
        total = float(self.concept_pixels.sum()) or 1.0
        layers = {}
        for name, ld in self.layers.items():
            s = ld.summary()
            s["top_units"] = {c: [{"unit": u, "iou": float(ld.iou[u, i + 1])}
                                  for u in self.top_units(name, c, min(5, ld.units))]
                              for i, c in enumerate(self.classes)}
            layers[name] = s
        return {"samples": self.samples, "seed": self.seed, "quantile": self.quantile,
                "iou_threshold": self.iou_threshold,
                "concept_pixel_share": {c: float(self.concept_pixels[i]) / total for i, c in enumerate(self.classes)},
                "layers": layers}

    def write_summary(self, path: str | Path) -> Path:
        """Write :meth:`summary` as JSON."""
        path = Path(path)
        path.write_text(json.dumps(self.summary(), indent=2))
        return path


def dissect_generator(generator: nn.Module, segmenter: nn.Module, layers: Sequence[str] | str,
                      classes: Sequence[str], *, categories: Sequence[str] | None = None, z_shape: Sequence[int],
                      samples: int = 1000, seed: int = 0, quantile: float = 0.01, iou_threshold: float = 0.04,
                      batch_size: int | None = None, top_images: int = 8,
                      cache_bytes: int = 1 << 30, max_upsampled: int = 1 << 25) -> GANDissection:
    """Dissect ``layers`` of ``generator`` over ``samples`` seeded z, labelling images with ``segmenter``.

    ``classes``: the segmenter's K class names; ``categories``: one category name per class (default: all
    "concept"); ``z_shape``: the shape of one latent sample; ``max_upsampled``: the most activation values
    upsampled to the image at once (the tally goes through the units in groups under it). Both models are left
    as they were.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    classes = list(classes)
    if not names:
        raise ValueError("give at least one generator layer to dissect")
    if len(set(names)) != len(names):
        raise ValueError(f"layers are repeated: {names}")
    if len(classes) < 1 or len(set(classes)) != len(classes):
        raise ValueError(f"the segmenter's class names must be distinct and not empty, got {classes}")
    cats = list(categories) if categories is not None else ["concept"] * len(classes)
    if len(cats) != len(classes):
        raise ValueError(f"{len(cats)} categories for {len(classes)} classes")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must lie in [0, 1], got {iou_threshold}")
    if top_images < 1:
        raise ValueError(f"top_images must be positive, got {top_images}")
    device = model_device(generator)
    bs = rows_per_pass(batch_size, device)
    rank, world = _world()
    if samples < world:
        raise ValueError(f"{samples} samples for {world} processes; give at least one per process")
    z_all = sample_z(samples, z_shape, seed)
    mine = torch.arange(rank, samples, world)
    category_names = list(dict.fromkeys(cats))
    label_category = torch.tensor([-1] + [category_names.index(c) for c in cats], dtype=torch.long)
    label_names = ["-"] + classes
    k = len(classes)

    concept_pixels = torch.zeros(k, dtype=torch.long, device=device)
    seg_dtype = torch.uint8 if k < 256 else torch.int16

    def run_batch(rec, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        rec.calls.clear()
        rec.activations.clear()
        z = z_all[idx].to(device)
        images = check_images(generator(z), len(idx))
        seg = segment(segmenter, images, k)
        acts = {}
        for n in names:
            a = rec[n]
            if a.dim() != 4:
                raise ValueError(f"layer {n!r} gives activations of shape {tuple(a.shape)}; dissection needs "
                                 "(B, C, H, W) feature maps")
            acts[n] = a
        return acts, seg

    batches = [mine[i:i + bs] for i in range(0, len(mine), bs)]

    def pass1(start: int):
        for idx in batches[start:]:
            acts, seg = run_batch(rec, idx)
            concept_pixels.add_(torch.bincount(seg.flatten(), minlength=k)[:k])
            yield idx, acts, {"seg": seg.to("cpu", seg_dtype)}
        if world > 1:
            torch.distributed.all_reduce(concept_pixels)

    def pass2(start: int, cache: list | None):
        for bi in range(start, len(batches)):
            idx = batches[bi]
            if cache is not None:
                acts, seg = None, cache[bi][1]["seg"].to(device).long()
            else:
                acts, seg = run_batch(rec, idx)
            pixel = (seg + 1)[:, None]  # label numbers 1..K; 0 is "unlabelled"
            no_image_labels = torch.full((len(idx), 0), -1, dtype=torch.long, device=device)
            every = torch.ones((len(idx), len(category_names)), dtype=torch.long, device=device)
            # the labels present and their masks, once for every layer (as label_masks, from the arg-max map)
            present = (torch.bincount(seg.flatten(), minlength=k) > 0).nonzero().view(-1) + 1
            masks = (present, pixel.flatten(1)[:, :, None] == present.view(1, 1, -1))
            yield Labels(pixel, no_image_labels, every, masks, acts)

    with capture(generator, names, grad=False) as rec, frozen(segmenter):
        out = two_pass_tally(pass1, pass2, names, batches=len(batches), total=samples, quantile=quantile,
                             top_images=top_images, label_category=label_category,
                             num_categories=len(category_names), device=device, cache_bytes=cache_bytes,
                             no_rows=f"process {rank} of {world} got no samples", max_elements=max_upsampled,
                             upsample=upsample_units)
    thresholds, tallies, tops = out.thresholds, out.tallies, out.tops
    out = {n: LayerDissection(n, thresholds[n].cpu(), tallies[n], label_names, category_names, iou_threshold,
                              tops[n].values.cpu(), tops[n].indices.cpu()) for n in names}
    return GANDissection(out, classes, samples, seed, quantile, iou_threshold, concept_pixels.cpu())
