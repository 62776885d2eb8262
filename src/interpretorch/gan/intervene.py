"""Interventions on a generator's units (Bau et al. 2019): switch units off and see what disappears, switch them
on in a region and see what appears.

A unit set is changed with :func:`interpretorch.capture.patched` while the generator runs on the same z, so the
user's generator is never modified. The average causal effect (ACE) of a unit set on a concept is the mean
over samples of the change in the fraction of pixels segmented as that concept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn

from interpretorch.capture import frozen, patched
from interpretorch.core import model_device, rows_per_pass
from interpretorch.gan.dissect import GANDissection, check_images, sample_z, segment


def _layer_mask(region: tuple[int, int, int, int], image_hw: tuple[int, int], layer_hw: tuple[int, int],
                device: torch.device) -> torch.Tensor:
    """(h, w) bool: the layer cells whose image footprint overlaps ``region`` (x0, y0, x1, y1 in image pixels)."""
    x0, y0, x1, y1 = region
    H, W = image_hw
    h, w = layer_hw
    cy0, cy1 = math.floor(y0 * h / H), math.ceil(y1 * h / H)
    cx0, cx1 = math.floor(x0 * w / W), math.ceil(x1 * w / W)
    m = torch.zeros((h, w), dtype=torch.bool, device=device)
    m[cy0:cy1, cx0:cx1] = True
    return m


def check_region(region: Sequence[int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """A region (x0, y0, x1, y1) in image pixels, checked to be a non-empty box inside an image of ``size``."""
    if len(region) != 4:
        raise ValueError(f"a region is four numbers x0,y0,x1,y1, got {list(region)}")
    x0, y0, x1, y1 = (int(v) for v in region)
    H, W = size
    if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
        raise ValueError(f"region {x0},{y0},{x1},{y1} is not a non-empty box inside the {W}x{H} image "
                         "(0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)")
    return x0, y0, x1, y1


def generate(generator: nn.Module, z: torch.Tensor, *, layer: str | None = None, units: Sequence[int] = (),
             value: float | torch.Tensor = 0.0, region: tuple[int, int, int, int] | None = None,
             batch_size: int | None = None) -> torch.Tensor:
    """Images for ``z`` with ``units`` of ``layer`` set to ``value`` (a number, or one per unit), everywhere or
    only at the layer cells under ``region`` (x0, y0, x1, y1 image pixels); unchanged without a layer."""
    device = model_device(generator)
    bs = rows_per_pass(batch_size, device)
    units = [int(u) for u in units]
    outs = []
    image_hw: tuple[int, int] | None = None
    with frozen(generator):
        if layer is None or not units:
            for i in range(0, len(z), bs):
                outs.append(check_images(generator(z[i:i + bs].to(device)), len(z[i:i + bs])).cpu())
            return torch.cat(outs)
        if region is not None:  # the image size, from one unpatched row
            image_hw = tuple(check_images(generator(z[:1].to(device)), 1).shape[-2:])
            region = check_region(region, image_hw)

        def change(a: torch.Tensor) -> torch.Tensor:
            if a.dim() < 2 or max(units) >= a.shape[1] or min(units) < 0:
                raise ValueError(f"units {units} are outside layer {layer!r}'s {a.shape[1] if a.dim() > 1 else 0} "
                                 "units")
            a = a.clone()
            v = torch.as_tensor(value, dtype=a.dtype, device=a.device)
            v = v.view(1, -1, *([1] * (a.dim() - 2))) if v.dim() == 1 else v
            if region is None:
                a[:, units] = v.expand_as(a[:, units]) if v.dim() else v
            else:
                if a.dim() != 4:
                    raise ValueError(f"a region needs (B, C, H, W) activations at {layer!r}, got {tuple(a.shape)}")
                m = _layer_mask(region, image_hw, tuple(a.shape[-2:]), a.device)
                a[:, units] = torch.where(m, v.expand_as(a[:, units]) if v.dim() else v, a[:, units])
            return a

        if isinstance(value, torch.Tensor) and value.dim() == 1 and value.numel() != len(units):
            raise ValueError(f"{value.numel()} values for {len(units)} units")
        with patched(generator, layer, change):
            for i in range(0, len(z), bs):
                outs.append(check_images(generator(z[i:i + bs].to(device)), len(z[i:i + bs])).cpu())
    return torch.cat(outs)


def segment_all(segmenter: nn.Module, images: torch.Tensor, classes: int, batch_size: int | None = None
                ) -> torch.Tensor:
    """Arg-max classes (N, H, W) of ``images`` under ``segmenter`` (left unchanged), on the CPU."""
    device = model_device(segmenter)
    bs = rows_per_pass(batch_size, device)
    with frozen(segmenter):
        return torch.cat([segment(segmenter, images[i:i + bs].to(device), classes).cpu()
                          for i in range(0, len(images), bs)])


def _band(x: torch.Tensor) -> tuple[float, float, float]:
    """Mean and its 95 % normal interval (mean +- 1.96 standard errors) over samples."""
    x = x.double()
    m = float(x.mean())
    se = float(x.std(unbiased=True) / math.sqrt(len(x))) if len(x) > 1 else 0.0
    return m, m - 1.96 * se, m + 1.96 * se


def _bootstrap_removed(before: torch.Tensor, after: torch.Tensor, seed: int, n: int = 1000
                       ) -> tuple[float, float]:
    """95 % bootstrap interval over samples of 1 - sum(after) / sum(before)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(before), (n, len(before)), generator=g)
    b, a = before.double()[idx].sum(1), after.double()[idx].sum(1)
    r = torch.where(b > 0, 1.0 - a / b.clamp(min=1e-12), torch.zeros_like(b))
    lo, hi = torch.quantile(r, torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return lo, hi


@dataclass
class Ablation:
    """The effect of setting a unit set to ``value`` on one concept, per sample and summarised."""

    concept: str
    layer: str
    kind: str                 # "top", "random" or "other:<concept>"
    units: list[int]
    value: float
    before: torch.Tensor      # (N,) fraction of each sample's pixels segmented as the concept
    after: torch.Tensor       # (N,) the same after the intervention
    seed: int = 0

    @property
    def ace(self) -> tuple[float, float, float]:
        """Average causal effect (mean change of the concept's pixel fraction) and its 95 % band."""
        return _band(self.after - self.before)

    @property
    def present(self) -> int:
        """Samples in which the concept appears before the intervention (n)."""
        return int((self.before > 0).sum())

    @property
    def removed(self) -> float | None:
        """Fraction of the concept's pixels (over all samples) that the intervention removed; None when the
        concept appears in no sample (nothing to remove: no percentage)."""
        b = float(self.before.double().sum())
        return 1.0 - float(self.after.double().sum()) / b if b > 0 else None

    def to_dict(self) -> dict:
        """JSON-ready numbers; ``removed`` and its band are None when the concept is absent (``present`` 0)."""
        ace, lo, hi = self.ace
        removed = self.removed
        band = list(_bootstrap_removed(self.before, self.after, self.seed)) if removed is not None else None
        return {"concept": self.concept, "layer": self.layer, "kind": self.kind, "units": self.units,
                "value": self.value, "samples": len(self.before), "present": self.present,
                "fraction_before": float(self.before.double().mean()),
                "fraction_after": float(self.after.double().mean()),
                "ace": ace, "ace_band95": [lo, hi], "removed": removed, "removed_band95": band}


@dataclass
class Insertion:
    """Setting a unit set to high values inside a region: where the concept's new pixels appear."""

    concept: str
    layer: str
    units: list[int]
    region: tuple[int, int, int, int]
    values: list[float]
    new_inside: torch.Tensor   # (N,) new concept pixels inside the region, per sample
    new_total: torch.Tensor    # (N,) new concept pixels anywhere
    region_pixels: int
    before_inside: torch.Tensor  # (N,) concept pixels inside the region before
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def inside(self) -> float:
        """Fraction of all new concept pixels (over all samples) that fall inside the region."""
        t = float(self.new_total.sum())
        return float(self.new_inside.sum()) / t if t > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready numbers."""
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randint(0, len(self.new_total), (1000, len(self.new_total)), generator=g)
        t, i = self.new_total.double()[idx].sum(1), self.new_inside.double()[idx].sum(1)
        r = torch.where(t > 0, i / t.clamp(min=1), torch.zeros_like(t))
        lo, hi = torch.quantile(r, torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
        n = len(self.new_total)
        return {"concept": self.concept, "layer": self.layer, "units": self.units, "region": list(self.region),
                "values": self.values, "samples": n,
                "new_pixels_per_sample": float(self.new_total.double().mean()),
                "fraction_new_inside_region": self.inside, "fraction_new_inside_band95": [lo, hi],
                "region_share_of_image": self.region_pixels / float(self.extra.get("image_pixels", 1)),
                "region_covered_before": float(self.before_inside.double().sum()) / max(1, self.region_pixels * n),
                "region_covered_after": float((self.before_inside + self.new_inside).double().sum())
                / max(1, self.region_pixels * n)}


def concept_fractions(seg: torch.Tensor, index: int) -> torch.Tensor:
    """(N,) fraction of each segmentation's pixels that are class ``index``."""
    return (seg == index).flatten(1).double().mean(dim=1)


@dataclass
class ConceptInterventions:
    """Everything measured for one concept at one layer, with the images to show."""

    concept: str
    layer: str
    k: int
    ablations: list[Ablation]
    insertion: Insertion | None
    images: dict[str, torch.Tensor]  # "before", "top", "random", "insert": (n_show, 3, H, W)
    masks: dict[str, torch.Tensor]   # the concept's pixels in each: (n_show, H, W) bool
    shown: list[int]                 # sample indices shown

    def to_dict(self) -> dict:
        """JSON-ready numbers (no images)."""
        return {"concept": self.concept, "layer": self.layer, "k": self.k,
                "ablations": [a.to_dict() for a in self.ablations],
                "insertion": self.insertion.to_dict() if self.insertion is not None else None,
                "shown_samples": self.shown}


def intervene(generator: nn.Module, segmenter: nn.Module, dissection: GANDissection, layer: str, concept: str,
              *, z_shape: Sequence[int], k: int = 20, samples: int = 200, seed: int = 1, value: float = 0.0,
              other: str | None = None, region: Sequence[int] | None = None, insert_scale: float = 1.0,
              n_show: int = 8, batch_size: int | None = None) -> ConceptInterventions:
    """Ablate ``concept``'s top-``k`` units of ``layer`` (from ``dissection``), ``k`` random units and ``other``
    concept's top-``k`` units on ``samples`` seeded z (stream ``seed``), and insert the top units in ``region``.

    Insertion sets each unit to ``insert_scale`` times its largest activation over the samples inside the region
    (the default region is the image's central quarter: half its width and height). ``other`` defaults to the
    concept with the most pixels after this one. Both models are left as they were.
    """
    classes = dissection.classes
    ci = dissection.concept_index(concept)
    units_at = dissection.layers[layer].units if layer in dissection.layers else None
    if units_at is None:
        raise ValueError(f"layer {layer!r} was not dissected; dissected: {list(dissection.layers)}")
    if not 1 <= k <= units_at:
        raise ValueError(f"--units {k}: layer {layer!r} has {units_at} units")
    if samples < 2:
        raise ValueError(f"interventions need at least 2 samples for a band, got {samples}")
    if other is None:
        order = sorted(range(len(classes)), key=lambda i: -int(dissection.concept_pixels[i]))
        other = next(classes[i] for i in order if i != ci)
    oi = dissection.concept_index(other)
    if oi == ci:
        raise ValueError(f"the other concept must differ from {concept!r}")
    z = sample_z(samples, z_shape, seed)
    kk = len(classes)
    base = generate(generator, z, batch_size=batch_size)
    seg0 = segment_all(segmenter, base, kk, batch_size)
    before = concept_fractions(seg0, ci)
    top = dissection.top_units(layer, concept, k)
    g = torch.Generator().manual_seed(seed)
    rand = sorted(torch.randperm(units_at, generator=g)[:k].tolist())
    oth = dissection.top_units(layer, other, k)
    ablations, imgs, segs = [], {"before": base}, {"before": seg0}
    for kind, units in (("top", top), ("random", rand), (f"other:{other}", oth)):
        out = generate(generator, z, layer=layer, units=units, value=value, batch_size=batch_size)
        seg = segment_all(segmenter, out, kk, batch_size)
        ablations.append(Ablation(concept, layer, kind, list(units), float(value), before,
                                  concept_fractions(seg, ci), seed))
        if kind in ("top", "random"):
            imgs[kind], segs[kind] = out, seg
    H, W = base.shape[-2:]
    if region is None:
        region = (W // 4, H // 4, W - W // 4, H - H // 4)
    region = check_region(region, (H, W))
    # the high value of each unit: its largest activation over these samples, times insert_scale
    from interpretorch.capture import capture

    device = model_device(generator)
    bs = rows_per_pass(batch_size, device)
    peak = None
    with capture(generator, [layer], grad=False) as rec:
        for i in range(0, samples, bs):
            rec.calls.clear()
            generator(z[i:i + bs].to(device))
            a = rec[layer][:, top].float()
            m = a.transpose(0, 1).reshape(len(top), -1).amax(dim=1).cpu()
            peak = m if peak is None else torch.maximum(peak, m)
    values = peak * insert_scale
    ins_img = generate(generator, z, layer=layer, units=top, value=values, region=region, batch_size=batch_size)
    ins_seg = segment_all(segmenter, ins_img, kk, batch_size)
    x0, y0, x1, y1 = region
    inside = torch.zeros((H, W), dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    new = (ins_seg == ci) & (seg0 != ci)
    insertion = Insertion(concept, layer, top, region, values.tolist(), (new & inside).flatten(1).sum(1),
                          new.flatten(1).sum(1), int(inside.sum()), ((seg0 == ci) & inside).flatten(1).sum(1),
                          seed, {"image_pixels": H * W})
    imgs["insert"], segs["insert"] = ins_img, ins_seg
    # show the samples where the concept covers most pixels
    shown = sorted(range(samples), key=lambda i: (-float(before[i]), i))[:n_show]
    return ConceptInterventions(concept, layer, k, ablations, insertion,
                                {key: v[shown] for key, v in imgs.items()},
                                {key: (v[shown] == ci) for key, v in segs.items()}, shown)
