"""Streaming statistics of unit activations (Network and GAN Dissection), kept on the model's device and exactly
mergeable.

- :class:`TopQuantile`: per-unit top-quantile threshold of activations seen in a stream.
- :class:`TopImages`: per unit, the images with the largest peak activation.
- :class:`IoUTally`: per unit and label, the intersection / activation / truth pixel counts of NetDissect.

Each has ``state_dict`` / ``load_state_dict`` (checkpoint and resume), ``merge`` (shards) and ``all_reduce``
(torch.distributed), and merging shards gives exactly what one pass over all the data gives.
:func:`upsample_units` is the bilinear upsampling GAN Dissection's tally uses (see its docstring for why it is not
:func:`interpretorch.explanation.upsample`).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# Exact top-k is kept while units * k stays below this many values (256 MiB of float32); beyond it the
# threshold comes from a histogram sketch instead.
MAX_EXACT_VALUES = 1 << 26
_BINS = 1 << 16


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _as_units(x: torch.Tensor, units: int, what: str) -> torch.Tensor:
    """(B, U, ...) -> (U, B * ...) values per unit."""
    if x.dim() < 2 or x.shape[1] != units:
        raise ValueError(f"{what}: expected activations (B, {units}, ...), got shape {tuple(x.shape)}")
    return x.transpose(0, 1).reshape(units, -1)


def _ordered_keys(x: torch.Tensor) -> torch.Tensor:
    """Map float32 values to 16-bit keys whose order is the order of the values (bfloat16 truncation bins)."""
    bits = x.float().contiguous().view(torch.int32)
    hi = (bits >> 16) & 0xFFFF  # sign, exponent, 7 mantissa bits
    neg = hi >= 0x8000
    return torch.where(neg, 0xFFFF - hi, hi + 0x8000).long()  # negatives reversed below the positives


def _key_value(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_ordered_keys`: the bin's edge nearest zero, as float32."""
    keys = keys.long()
    hi = torch.where(keys >= 0x8000, keys - 0x8000, 0xFFFF - keys)
    return (hi << 16).to(torch.int32).view(torch.float32)


class TopQuantile:
    """Per-unit threshold ``t_u``: the ``(floor(q * n) + 1)``-th largest of the ``n`` activations of unit ``u``.

    So at most ``floor(q * n)`` activations of a unit lie strictly above its threshold (the NetDissect region is
    ``act > t_u``). ``capacity`` is an upper bound on ``n`` (images x positions per image). When
    ``units * (floor(q * capacity) + 1)`` values fit in ``max_exact`` the largest values are kept and the
    threshold is exact. Otherwise a per-unit histogram over bfloat16 truncation bins (65,536 int32 counters
    per unit) is kept: the true threshold and the estimate lie in the same bin, so
    ``|estimate - t_u| <= 2**-7 * |t_u|`` (relative error below 0.8 %) for normal floats; counts stay exact,
    so merging is still exact.
    """

    def __init__(self, units: int, quantile: float, capacity: int, device: torch.device | str = "cpu", *,
                 max_exact: int = MAX_EXACT_VALUES) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
        if units < 1 or capacity < 1:
            raise ValueError(f"units and capacity must be positive, got {units} and {capacity}")
        self.units, self.quantile, self.capacity = int(units), float(quantile), int(capacity)
        self.device = torch.device(device)
        self.k = min(self.capacity, math.floor(self.quantile * self.capacity) + 1)
        self.exact = self.units * self.k <= max_exact
        self.seen = 0
        if self.exact:
            self.top = torch.full((self.units, 0), -math.inf, device=self.device)
        else:
            self.counts = torch.zeros(self.units * _BINS, dtype=torch.int32, device=self.device)

    def update(self, activations: torch.Tensor) -> None:
        """Add a batch of activations (B, U, ...) of this layer."""
        v = _as_units(activations.detach().to(self.device), self.units, "TopQuantile.update").float()
        if torch.isnan(v).any():
            raise ValueError("activations contain NaN; the dissected layer's output is not finite")
        self.seen += v.shape[1]
        if self.seen > self.capacity:
            raise ValueError(f"more activations per unit ({self.seen}) than the capacity {self.capacity} the "
                             "estimator was made for")
        if self.exact:
            both = torch.cat([self.top, v], dim=1)
            self.top = both.topk(min(self.k, both.shape[1]), dim=1, sorted=True).values
        else:
            idx = _ordered_keys(v) + torch.arange(self.units, device=self.device)[:, None] * _BINS
            self.counts.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), dtype=torch.int32,
                                                                  device=self.device))

    def thresholds(self) -> torch.Tensor:
        """Return the (U,) per-unit thresholds of everything seen (exact, or within one bfloat16 bin)."""
        if self.seen == 0:
            raise ValueError("no activations were seen (empty dataset?)")
        rank = min(self.seen, math.floor(self.quantile * self.seen) + 1)  # 1-based rank from the top
        if self.exact:
            return self.top[:, rank - 1].clone()
        counts = self.counts.view(self.units, _BINS).flip(1).long().cumsum(1)  # from the largest bin down
        first = (counts >= rank).int().argmax(dim=1)
        return _key_value(_BINS - 1 - first)

    def merge(self, other: "TopQuantile") -> None:
        """Add the values seen by ``other`` (same units, quantile, capacity and mode)."""
        self._check(other.state_dict())
        self.seen += other.seen
        if self.exact:
            both = torch.cat([self.top, other.top.to(self.device)], dim=1)
            self.top = both.topk(min(self.k, both.shape[1]), dim=1).values
        else:
            self.counts += other.counts.to(self.device)

    def all_reduce(self) -> None:
        """Merge the estimators of every process of the default torch.distributed group (in place, everywhere)."""
        if not _dist_ready():
            return
        dist = torch.distributed
        seen = torch.tensor([self.seen], dtype=torch.long, device=self.device)
        dist.all_reduce(seen)
        if self.exact:
            sizes = [torch.zeros(1, dtype=torch.long, device=self.device) for _ in range(dist.get_world_size())]
            dist.all_gather(sizes, torch.tensor([self.top.shape[1]], device=self.device))
            width = int(max(s.item() for s in sizes))
            pad = torch.full((self.units, width), -math.inf, device=self.device)
            pad[:, :self.top.shape[1]] = self.top
            parts = [torch.empty_like(pad) for _ in sizes]
            dist.all_gather(parts, pad.contiguous())
            both = torch.cat(parts, dim=1)
            self.top = both.topk(min(self.k, int(seen.item())), dim=1).values
        else:
            dist.all_reduce(self.counts)
        self.seen = int(seen.item())

    def state_dict(self) -> dict:
        """Return the estimator's state (tensors on CPU)."""
        state = {"units": self.units, "quantile": self.quantile, "capacity": self.capacity, "k": self.k,
                 "exact": self.exact, "seen": self.seen}
        state["top" if self.exact else "counts"] = (self.top if self.exact else self.counts).cpu()
        return state

    def _check(self, state: dict) -> None:
        for key in ("units", "quantile", "capacity", "exact"):
            if state[key] != getattr(self, key):
                raise ValueError(f"TopQuantile state has {key}={state[key]!r}, this estimator {getattr(self, key)!r}")

    def load_state_dict(self, state: dict) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        self._check(state)
        self.seen = int(state["seen"])
        if self.exact:
            self.top = state["top"].to(self.device)
        else:
            self.counts = state["counts"].to(self.device)


class TopImages:
    """Per unit, the ``n`` images with the largest peak activation (ties broken by the smaller image index)."""

    def __init__(self, units: int, n: int, device: torch.device | str = "cpu") -> None:
        self.units, self.n, self.device = int(units), int(n), torch.device(device)
        self.values = torch.empty((self.units, 0), device=self.device)
        self.indices = torch.empty((self.units, 0), dtype=torch.long, device=self.device)

    def _keep(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        order = indices.argsort(dim=1, stable=True)
        values, indices = values.gather(1, order), indices.gather(1, order)
        order = values.argsort(dim=1, descending=True, stable=True)[:, :self.n]
        self.values, self.indices = values.gather(1, order), indices.gather(1, order)

    def update(self, activations: torch.Tensor, indices: torch.Tensor) -> None:
        """Add a batch: activations (B, U, ...) and the images' dataset indices (B,)."""
        a = activations.detach().to(self.device)
        peak = a.reshape(a.shape[0], a.shape[1], -1).amax(dim=2).float().T  # (U, B)
        idx = indices.to(self.device).long()[None].expand(self.units, -1)
        self._keep(torch.cat([self.values, peak], 1), torch.cat([self.indices, idx], 1))

    def merge(self, other: "TopImages") -> None:
        """Add the images seen by ``other``."""
        self._keep(torch.cat([self.values, other.values.to(self.device)], 1),
                   torch.cat([self.indices, other.indices.to(self.device)], 1))

    def all_reduce(self) -> None:
        """Merge over every process of the default torch.distributed group."""
        if not _dist_ready():
            return
        dist = torch.distributed
        real = torch.tensor([self.values.shape[1]], device=self.device)
        widths = [torch.zeros_like(real) for _ in range(dist.get_world_size())]
        dist.all_gather(widths, real)
        w = int(max(x.item() for x in widths))
        vals = torch.full((self.units, w), -math.inf, device=self.device)
        idx = torch.full((self.units, w), -1, dtype=torch.long, device=self.device)
        vals[:, :self.values.shape[1]], idx[:, :self.indices.shape[1]] = self.values, self.indices
        pv = [torch.empty_like(vals) for _ in range(dist.get_world_size())]
        pi = [torch.empty_like(idx) for _ in range(dist.get_world_size())]
        dist.all_gather(pv, vals)
        dist.all_gather(pi, idx)
        v, i = torch.cat(pv, 1), torch.cat(pi, 1)
        i = torch.where(i < 0, torch.iinfo(torch.long).max, i)  # padding sorts last among equal values
        self._keep(v, i)
        keep = min(self.n, int(sum(x.item() for x in widths)))  # every unit saw the same images
        self.values, self.indices = self.values[:, :keep], self.indices[:, :keep]

    def state_dict(self) -> dict:
        """Return the tracker's state (tensors on CPU)."""
        return {"units": self.units, "n": self.n, "values": self.values.cpu(), "indices": self.indices.cpu()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a state returned by :meth:`state_dict`."""
        if (state["units"], state["n"]) != (self.units, self.n):
            raise ValueError(f"TopImages state is for {state['units']} units x {state['n']} images")
        self.values, self.indices = state["values"].to(self.device), state["indices"].to(self.device)


def label_masks(pixel: torch.Tensor, image_labels: torch.Tensor, num_labels: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the labels present in a batch (L_b,) and their masks (B, S, L_b) bool.

    ``pixel`` (B, M, sh, sw) holds label numbers per mask layer (0 = none); ``image_labels`` (B, K) holds
    image-level labels (-1 = padding), each covering the whole image. A pixel counts once per label even
    when several layers carry it.
    """
    b, m = pixel.shape[:2]
    s = pixel.shape[-2] * pixel.shape[-1]
    pix = pixel.reshape(b, m, s).long()
    img = image_labels.long()
    for what, t in (("mask", pix), ("image-level", img)):
        if t.numel() and int(t.max()) >= num_labels:
            raise ValueError(f"{what} label {int(t.max())} is outside the {num_labels} labels of the dataset")
    count = torch.bincount(pix.reshape(-1), minlength=num_labels) if pix.numel() else \
        torch.zeros(num_labels, dtype=torch.long, device=pixel.device)
    if img.numel():
        count = count + torch.bincount(img.clamp(min=0).reshape(-1), minlength=num_labels)
    count[0] = 0
    present = count.nonzero().view(-1)
    y = torch.zeros((b, s, present.numel()), dtype=torch.bool, device=pixel.device)
    if present.numel() == 0:
        return present, y
    lut = torch.full((num_labels,), -1, dtype=torch.long, device=pixel.device)
    lut[present] = torch.arange(present.numel(), device=pixel.device)
    bs_index = torch.arange(b * s, device=pixel.device).view(b, s)
    flat = y.view(b * s, -1)
    for layer in range(m):
        local = lut[pix[:, layer]]  # (B, S), -1 where unlabelled
        hit = local >= 0
        flat[bs_index[hit], local[hit]] = True
    hit = img > 0
    if hit.any():
        bi, ki = hit.nonzero(as_tuple=True)
        y[bi, :, lut[img[bi, ki]]] = True
    return present, y


def _interpolation_matrix(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_in, n_out): row i is how input position i spreads over the outputs under F.interpolate's linear mode."""
    eye = torch.eye(n_in, device=device).view(n_in, 1, n_in)
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :]


def upsample_units(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample (B, U, h, w) unit maps to ``size`` as a new float tensor (align_corners=False).

    Computed as two small matrix products, several times faster on the CPU than F.interpolate for feature maps
    (results agree to float rounding, about 1e-6 of the values). Not :func:`interpretorch.explanation.upsample`,
    whose contract differs on purpose: that one resizes (B, h, w) *maps* with F.interpolate and may return its
    input unchanged, while :meth:`IoUTally.update` needs every unit of a 4-D batch in a fresh tensor it can
    threshold in place. Network Dissection keeps F.interpolate (its counts are pinned by tests); GAN Dissection
    passes this one.
    """
    h, w = a.shape[-2:]
    if (h, w) == tuple(size):
        return a.float().clone()
    mw = _interpolation_matrix(w, size[1], a.device)
    mh = _interpolation_matrix(h, size[0], a.device)
    return mh.T @ (a.float() @ mw)


class IoUTally:
    """NetDissect counts per unit and label, and the IoU they give.

    For each image, unit ``u``'s region is where its activation, upsampled (bilinear) to the mask size, exceeds
    ``t_u``. Counts: ``intersect[u, l]`` = region pixels labelled ``l``; ``truth[l]`` = pixels labelled ``l``
    (an image-level label covers the whole image); ``activation[u, c]`` = region pixels in images that carry a
    label of category ``c``. ``IoU[u, l] = intersect / (activation[u, cat(l)] + truth[l] - intersect)``.
    """

    def __init__(self, units: int, label_category: torch.Tensor, num_categories: int,
                 device: torch.device | str = "cpu") -> None:
        self.units, self.num_categories, self.device = int(units), int(num_categories), torch.device(device)
        self.label_category = label_category.long().to(self.device)  # (L,), -1 for labels with no category
        n = self.label_category.numel()
        self.intersect = torch.zeros((self.units, n), dtype=torch.long, device=self.device)
        self.activation = torch.zeros((self.units, self.num_categories), dtype=torch.long, device=self.device)
        self.truth = torch.zeros(n, dtype=torch.long, device=self.device)
        self.images = 0

    @property
    def num_labels(self) -> int:
        """Number of label slots (global label numbers 0 .. L-1)."""
        return self.label_category.numel()

    def update(self, activations: torch.Tensor, thresholds: torch.Tensor, pixel: torch.Tensor,
               image_labels: torch.Tensor, categories: torch.Tensor, *, masks: tuple | None = None,
               max_elements: int = 1 << 25, upsample: Callable | None = None) -> None:
        """Tally one batch: activations (B, U, h, w), thresholds (U,), and the batch's labels (see label_masks).

        ``masks`` may pass ``label_masks(pixel, image_labels, L)`` computed once for several layers;
        ``upsample(maps, (sh, sw))`` may replace F.interpolate's bilinear upsampling (it must return a new tensor).
        """
        a = activations.detach().to(self.device)
        if a.dim() != 4 or a.shape[1] != self.units:
            raise ValueError(f"expected activations (B, {self.units}, h, w), got shape {tuple(a.shape)}")
        if categories.shape != (a.shape[0], self.num_categories) or pixel.shape[0] != a.shape[0]:
            raise ValueError(f"labels for {pixel.shape[0]} images and categories {tuple(categories.shape)} do not "
                             f"match {a.shape[0]} images x {self.num_categories} categories")
        cats = categories.to(self.device)
        sh, sw = pixel.shape[-2:]
        if masks is None:
            masks = label_masks(pixel.to(self.device), image_labels.to(self.device), self.num_labels)
        present, y = masks
        self.truth.index_add_(0, present, y.sum(dim=(0, 1)))
        self.images += a.shape[0]
        b = a.shape[0]
        # one matmul gives the intersections and, from the appended column of ones, the region areas
        yf = torch.cat([y.float(), torch.ones((b, sh * sw, 1), device=self.device)], dim=2)
        t = thresholds.to(self.device).float()
        step = max(1, max_elements // max(1, b * sh * sw))
        for u0 in range(0, self.units, step):
            u1 = min(self.units, u0 + step)
            up = a[:, u0:u1].float()
            if up.shape[-2:] != (sh, sw):
                up = F.interpolate(up, size=(sh, sw), mode="bilinear", align_corners=False) if upsample is None \
                    else upsample(up, (sh, sw))
            else:
                up = up.clone()
            # up - t > 0 exactly when up > t (IEEE subtraction with gradual underflow); 1.0 / 0.0 in place
            region = up.sub_(t[u0:u1].view(1, -1, 1, 1)).gt_(0.0).reshape(b, u1 - u0, sh * sw)
            # counts < 2**24 per image are exact in float32
            counts = torch.bmm(region, yf).round_().long()  # (B, Uc, L_b + 1)
            self.activation[u0:u1] += (counts[:, :, -1:] * cats[:, None, :].long()).sum(dim=0)
            if present.numel():
                self.intersect[u0:u1].index_add_(1, present, counts[:, :, :-1].sum(dim=0))

    def iou(self) -> torch.Tensor:
        """Return IoU (U, L); labels without a category or with an empty union get 0."""
        cat = self.label_category.clamp(min=0)
        act = self.activation[:, cat]
        union = act + self.truth[None] - self.intersect
        out = torch.where(union > 0, self.intersect.double() / union.clamp(min=1).double(),
                          torch.zeros((), dtype=torch.double, device=self.device))
        out[:, self.label_category < 0] = 0
        return out

    def merge(self, other: "IoUTally") -> None:
        """Add the counts of ``other`` (same units and labels)."""
        if other.intersect.shape != self.intersect.shape or other.num_categories != self.num_categories:
            raise ValueError("IoUTally shapes differ; cannot merge")
        self.intersect += other.intersect.to(self.device)
        self.activation += other.activation.to(self.device)
        self.truth += other.truth.to(self.device)
        self.images += other.images

    def all_reduce(self) -> None:
        """Sum the counts of every process of the default torch.distributed group (in place, everywhere)."""
        if not _dist_ready():
            return
        images = torch.tensor([self.images], dtype=torch.long, device=self.device)
        for t in (self.intersect, self.activation, self.truth, images):
            torch.distributed.all_reduce(t)
        self.images = int(images.item())

    def state_dict(self) -> dict:
        """Return the counts (tensors on CPU)."""
        return {"units": self.units, "intersect": self.intersect.cpu(), "activation": self.activation.cpu(),
                "truth": self.truth.cpu(), "images": self.images, "label_category": self.label_category.cpu()}

    def load_state_dict(self, state: dict) -> None:
        """Restore counts returned by :meth:`state_dict`."""
        if state["intersect"].shape != self.intersect.shape or not torch.equal(
                state["label_category"], self.label_category.cpu()):
            raise ValueError("IoUTally state is for different units or labels")
        self.intersect = state["intersect"].to(self.device)
        self.activation = state["activation"].to(self.device)
        self.truth = state["truth"].to(self.device)
        self.images = int(state["images"])
