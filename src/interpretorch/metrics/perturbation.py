"""Faithfulness by replacing features (Quantus's faithfulness family), every perturbed row of every image through
the model together, ``batch_size`` rows per call.

* Faithfulness correlation (Bhatt et al. 2020): Pearson correlation, over random feature subsets, between the
  subset's attribution sum and the score drop when the subset is replaced.
* Faithfulness estimate (Alvarez-Melis & Jaakkola 2018): Pearson correlation, over steps of the most relevant
  features first, between each step's attribution sum and the score drop when (only) that step is replaced.
* Monotonicity (Arya et al. 2019): starting from the baseline, features are put back least relevant first; 1
  when the score never decreases, else 0.
* Monotonicity correlation (Nguyen & Martinez 2020): Spearman correlation between each step's attribution sum
  (least relevant first) and the squared, score-normalised change when that step is replaced.
* Pixel flipping (Bach et al. 2015): the score as features are removed cumulatively, most relevant first.
* Region perturbation (Samek et al. 2015): the score drop as square patches are removed cumulatively in order
  of their attribution sum; AOPC is the mean drop.
* Selectivity (Montavon et al. 2018): the score as every patch is removed, most relevant first; its AUC.
* Sensitivity-N (Ancona et al. 2018), as Quantus 0.6 computes it: cumulative removal, and for each step the
  correlation, across the images, between the step's attribution sum and the score drop.
* IROF (Rieger & Hansen 2020): SLIC superpixels removed most relevant (mean attribution) first; the area over
  the curve of the score relative to the clean score.

A feature is a pixel (all of its channels at once) of the (B, H, W) map; Quantus flattens the map broadcast to
every channel and so removes one channel value at a time, which is the same thing for one-channel inputs (the
parity tests use those). Ties in the map are ordered by raster position (a stable sort); Quantus's
``np.argsort`` orders them arbitrarily. Baselines are Quantus's: "black" (the image's minimum over every channel
and pixel), "white" (its maximum), "mean" (its mean), a number, or a tensor broadcasting to the inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
from torch import nn

from interpretorch.core.targets import Target
from interpretorch.metrics._common import (Clean, MapsLike, Scorer, batched_rows, maps_2d, prepare,
                                          sequence_scores)

__all__ = ["BASELINES", "feature_baseline", "pearson", "spearman", "average_ranks", "draw_subsets", "faithfulness_correlation",
           "faithfulness_estimate", "monotonicity", "monotonicity_correlation", "pixel_flipping",
           "region_perturbation", "selectivity", "sensitivity_n", "irof", "curve_auc", "patch_labels"]

Baseline = Union[str, float, int, torch.Tensor]
BASELINES = ("black", "white", "mean")
MaskFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def feature_baseline(x: torch.Tensor, baseline: Baseline) -> torch.Tensor:
    """(B, C, H, W) values that replaced features take: "black" / "white" / "mean" (each image's min / max / mean
    over all its values, as Quantus), a number, or a tensor broadcasting to ``x``."""
    b = x.shape[0]
    if isinstance(baseline, str):
        flat = x.reshape(b, -1)
        stats = {"black": lambda: flat.amin(1), "white": lambda: flat.amax(1), "mean": lambda: flat.mean(1)}
        if baseline not in stats:
            raise ValueError(f"unknown baseline {baseline!r}; use one of {BASELINES}, a number or a tensor")
        return stats[baseline]()[:, None, None, None].expand_as(x)
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if isinstance(baseline, torch.Tensor):
        try:
            return torch.broadcast_to(baseline.to(device=x.device, dtype=x.dtype), x.shape)
        except RuntimeError as e:
            raise ValueError(f"a baseline tensor of shape {tuple(baseline.shape)} does not broadcast to the "
                             f"inputs' shape {tuple(x.shape)}") from e
    raise TypeError(f"baseline must be one of {BASELINES}, a number or a tensor, got {type(baseline).__name__}")


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Pearson correlation of (B, N) tensors (float64); NaN where a row is constant."""
    a = a.double() - a.double().mean(1, keepdim=True)
    b = b.double() - b.double().mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """1-based ranks of each row of (B, N), tied values sharing their average rank."""
    s = torch.sort(v, dim=1).values.contiguous()
    lo = torch.searchsorted(s, v.contiguous(), right=False).double()
    hi = torch.searchsorted(s, v.contiguous(), right=True).double()
    return (lo + hi + 1) / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Spearman rank correlation of (B, N) tensors (average ranks for ties); NaN where a row is constant."""
    return pearson(average_ranks(a.double()), average_ranks(b.double()))


@dataclass
class _Setup:
    scorer: Scorer
    clean: Clean
    maps: torch.Tensor  # (B, H, W) float64
    base: torch.Tensor  # (B, C, H, W)
    softmax: bool

    @property
    def x(self) -> torch.Tensor:
        return self.clean.inputs

    def clean_scores(self) -> torch.Tensor:
        return self.clean.scores(self.scorer, self.softmax).double()

    def scores(self, n_steps: int, mask_fn: MaskFn,
               fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(B, n_steps) target scores of the rows (image i, step s), whose pixels ``mask_fn(i, s)`` (n, H, W)
        take the baseline (or the value ``fill(i, s)`` (n,)); rows of all images go through the model together,
        ``batch_size`` at a time."""
        b = self.x.shape[0]
        seq = self._sequences(n_steps, mask_fn, fill)
        if seq is not None:
            return seq
        out = torch.empty(b * n_steps, dtype=torch.float64, device=self.x.device)
        rows = torch.arange(b * n_steps, device=self.x.device)
        for sl in batched_rows(rows.numel(), self.scorer.batch_size):
            img, step = rows[sl] // n_steps, rows[sl] % n_steps
            mask = mask_fn(img, step)[:, None]
            base = self.base[img] if fill is None else fill(img, step).to(self.x.dtype)[:, None, None, None]
            xs = torch.where(mask, base, self.x[img])
            idx = None if self.clean.idx is None else self.clean.idx[img]
            out[sl] = self.scorer.forward_scores(xs, idx, self.softmax).double()
        return out.reshape(b, n_steps)


    def _sequences(self, n_steps: int, mask_fn: MaskFn,
                   fill: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None) -> torch.Tensor | None:
        """``scores`` run step after step for a group of images at a time, each row recomputing only where it
        differs from the same image's row before (``sequence_scores``); None where the model cannot run so."""
        def rows(img: torch.Tensor, k: int) -> torch.Tensor:
            step = torch.full_like(img, k)
            base = self.base[img] if fill is None else fill(img, step).to(self.x.dtype)[:, None, None, None]
            return torch.where(mask_fn(img, step)[:, None], base, self.x[img])
        return sequence_scores(self.scorer, self.x, self.clean.idx, n_steps, rows, self.softmax)


def _setup(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target, baseline: Baseline,
           softmax: bool, rule: str, batch_size: int | None, clean: torch.Tensor | None,
           absolute: bool = False) -> _Setup:
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    m = maps_2d(maps, cl.inputs, rule).double()
    m = m.abs() if absolute else m
    return _Setup(scorer, cl, m, feature_baseline(cl.inputs, baseline), softmax)


def _rank(maps: torch.Tensor, descending: bool) -> torch.Tensor:
    """(B, H, W) position of each pixel in the order (stable: ties in raster order)."""
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    order = torch.sort(flat, dim=1, descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand(b, -1).contiguous())
    return rank.reshape(maps.shape)


def _check_step(features_in_step: int, n: int) -> int:
    if isinstance(features_in_step, bool) or not isinstance(features_in_step, int) or features_in_step < 1:
        raise ValueError(f"features_in_step must be a positive integer, got {features_in_step!r}")
    if features_in_step > n:
        raise ValueError(f"features_in_step ({features_in_step}) exceeds the {n} pixels of an image")
    return math.ceil(n / features_in_step)


def _step_sums(maps: torch.Tensor, rank: torch.Tensor, step: int, n_steps: int) -> torch.Tensor:
    """(B, n_steps) attribution sums of the pixels of each step (ranks [s * step, (s + 1) * step))."""
    b = maps.shape[0]
    sums = torch.zeros(b, n_steps, dtype=torch.float64, device=maps.device)
    return sums.scatter_add_(1, (rank.reshape(b, -1) // step), maps.reshape(b, -1))


def draw_subsets(n_images: int, n_pixels: int, nr_runs: int, subset_size: int, seed: int = 0) -> torch.Tensor:
    """(B, nr_runs, subset_size) random pixel indices without replacement within each subset, from ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(n_images, nr_runs, n_pixels, generator=gen).argsort(dim=2)[..., :subset_size]


def faithfulness_correlation(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                             nr_runs: int = 100, subset_size: int = 224, baseline: Baseline = "black",
                             softmax: bool = False, seed: int = 0, subsets: torch.Tensor | None = None,
                             rule: str = "abs_sum", batch_size: int | None = None,
                             clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image faithfulness correlation (Bhatt et al. 2020); higher is better.

    ``subsets`` (B, nr_runs, subset_size) flat pixel indices replaces the random draw (from ``seed``), so the
    same draws can be replayed. One row per run and image.
    """
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    b, h, w = s.maps.shape
    if subsets is None:
        if not 0 < subset_size <= h * w:
            raise ValueError(f"subset_size must be in [1, {h * w}] (pixels of an image), got {subset_size}")
        if nr_runs < 2:
            raise ValueError(f"nr_runs must be at least 2 to correlate, got {nr_runs}")
        subsets = draw_subsets(b, h * w, nr_runs, subset_size, seed)
    subsets = torch.as_tensor(subsets).long().to(s.x.device)
    if subsets.dim() != 3 or subsets.shape[0] != b or subsets.min() < 0 or subsets.max() >= h * w:
        raise ValueError(f"subsets must be (B={b}, runs, size) pixel indices in [0, {h * w}), got shape "
                         f"{tuple(subsets.shape)}")
    runs = subsets.shape[1]
    member = torch.zeros(b, runs, h * w, dtype=torch.bool, device=s.x.device)
    member.scatter_(2, subsets, True)
    member = member.reshape(b, runs, h, w)
    att = (member * s.maps[:, None]).flatten(2).sum(2)
    pert = s.scores(runs, lambda i, r: member[i, r])
    return pearson(att, s.clean_scores()[:, None] - pert)


def faithfulness_estimate(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                          features_in_step: int = 1, baseline: Baseline = "black", softmax: bool = False,
                          rule: str = "abs_sum", batch_size: int | None = None,
                          clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image faithfulness estimate (Alvarez-Melis & Jaakkola 2018); higher is better. One row per step."""
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    n_steps = _check_step(features_in_step, s.maps[0].numel())
    rank = _rank(s.maps, descending=True)
    step = rank // features_in_step
    pert = s.scores(n_steps, lambda i, k: step[i] == k[:, None, None])
    return pearson(_step_sums(s.maps, rank, features_in_step, n_steps), s.clean_scores()[:, None] - pert)


def monotonicity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                 features_in_step: int = 1, baseline: Baseline = "black", softmax: bool = True,
                 absolute: bool = True, rule: str = "abs_sum", batch_size: int | None = None,
                 clean: torch.Tensor | None = None, return_curve: bool = False) -> torch.Tensor:
    """Per-image monotonicity (Arya et al. 2019): 1.0 when the score never drops as features are added to the
    baseline least relevant first, else 0.0; higher is better. ``return_curve`` gives the (B, steps) scores.
    ``absolute``: order by |attribution| (Quantus's default)."""
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean, absolute)
    n_steps = _check_step(features_in_step, s.maps[0].numel())
    step = _rank(s.maps, descending=False) // features_in_step
    # Row k has steps 0..k put back: the pixels still at the baseline are those of later steps.
    curve = s.scores(n_steps, lambda i, k: step[i] > k[:, None, None])
    if return_curve:
        return curve
    return (curve.diff(dim=1) >= 0).all(dim=1).double()


def monotonicity_correlation(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                             features_in_step: int = 1, baseline: Baseline = "uniform", nr_samples: int = 100,
                             eps: float = 1e-5, softmax: bool = True, absolute: bool = True, seed: int = 0,
                             uniform: tuple[float, float] = (0.0, 1.0), values: torch.Tensor | None = None,
                             rule: str = "abs_sum", batch_size: int | None = None,
                             clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image monotonicity correlation (Nguyen & Martinez 2020); higher is better. ``absolute``: |attribution|.

    As in Quantus, the default "uniform" baseline replaces each step's pixels, ``nr_samples`` times, with one
    value per image drawn from U(``uniform``) (from ``seed``; ``values`` (steps, nr_samples, B) replaces the
    draws, so the same ones can be replayed); the mean squared change over the samples is what is correlated.
    Any other baseline is deterministic and needs one row per step. One row per step, sample and image.
    """
    s = _setup(model, inputs, maps, target, "black" if baseline == "uniform" else baseline, softmax, rule,
               batch_size, clean, absolute)
    b = s.x.shape[0]
    n_steps = _check_step(features_in_step, s.maps[0].numel())
    rank = _rank(s.maps, descending=False)
    step = rank // features_in_step
    y = s.clean_scores()
    inv = torch.where(y.abs() >= eps, 1.0 / y.abs(), torch.ones_like(y)) ** 2
    if baseline == "uniform":
        if values is None:
            if nr_samples < 1:
                raise ValueError(f"nr_samples must be a positive integer, got {nr_samples}")
            gen = torch.Generator().manual_seed(int(seed))
            values = torch.rand(n_steps, nr_samples, b, generator=gen, dtype=torch.float64)
            values = values * (uniform[1] - uniform[0]) + uniform[0]
        values = torch.as_tensor(values, dtype=torch.float64).to(s.x.device)
        if values.dim() != 3 or values.shape[0] != n_steps or values.shape[2] != b:
            raise ValueError(f"values must be (steps={n_steps}, samples, B={b}), got {tuple(values.shape)}")
        k = values.shape[1]
        pert = s.scores(n_steps * k, lambda i, r: step[i] == (r // k)[:, None, None],
                        fill=lambda i, r: values[r // k, r % k, i]).reshape(b, n_steps, k)
    else:
        pert = s.scores(n_steps, lambda i, j: step[i] == j[:, None, None])[..., None]
    change = ((pert - y[:, None, None]) ** 2).mean(2) * inv[:, None]
    return spearman(_step_sums(s.maps, rank, features_in_step, n_steps), change)


def curve_auc(curve: torch.Tensor, dx: float = 1.0) -> torch.Tensor:
    """Trapezoidal area under (B, S) curves with spacing ``dx`` (Quantus's ``calculate_auc``: dx = 1)."""
    c = curve.double()
    if c.shape[1] < 2:
        return torch.zeros(c.shape[0], dtype=torch.float64, device=c.device)
    return ((c[:, 1:] + c[:, :-1]) * 0.5).sum(1) * dx


def pixel_flipping(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                   features_in_step: int = 1, baseline: Baseline = "black", softmax: bool = True,
                   rule: str = "abs_sum", batch_size: int | None = None,
                   clean: torch.Tensor | None = None) -> torch.Tensor:
    """(B, steps) scores after each cumulative removal of ``features_in_step`` pixels, most relevant first (Bach et
    al. 2015; Quantus's curve). A fast fall is better: ``curve_auc(curve, 1 / (steps - 1))`` summarises it."""
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    n_steps = _check_step(features_in_step, s.maps[0].numel())
    step = _rank(s.maps, descending=True) // features_in_step
    return s.scores(n_steps, lambda i, k: step[i] <= k[:, None, None])


def patch_labels(h: int, w: int, patch_size: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, int]:
    """(H, W) patch index of each pixel and the number of patches: a grid of ``patch_size`` squares laid over the
    image padded (floor / ceil of the remainder on each side, as Quantus) to a multiple of the patch size."""
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive integer, got {patch_size!r}")

    def pad(n: int) -> int:
        rest = n % patch_size
        return 0 if rest == 0 else (patch_size - rest) // 2

    bh, bw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    rows = (torch.arange(h, device=device) + pad(h)) // patch_size
    cols = (torch.arange(w, device=device) + pad(w)) // patch_size
    return rows[:, None] * bw + cols[None, :], bh * bw


def _patch_order(s: _Setup, patch_size: int, descending: bool) -> tuple[torch.Tensor, int]:
    """(B, H, W) rank of each pixel's patch in the order of patch attribution sums, and the number of patches."""
    b, h, w = s.maps.shape
    labels, n = patch_labels(h, w, patch_size, s.x.device)
    sums = torch.zeros(b, n, dtype=torch.float64, device=s.x.device)
    sums.scatter_add_(1, labels.reshape(1, -1).expand(b, -1), s.maps.reshape(b, -1))
    order = torch.sort(sums, dim=1, descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=s.x.device).expand(b, -1).contiguous())
    return rank.gather(1, labels.reshape(1, -1).expand(b, -1)).reshape(b, h, w), n


def region_perturbation(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                        patch_size: int = 8, order: str = "morf", regions_evaluation: int = 100,
                        baseline: Baseline = "black", softmax: bool = True, rule: str = "abs_sum",
                        batch_size: int | None = None, clean: torch.Tensor | None = None) -> torch.Tensor:
    """(B, R) score drops ``f(x) - f(x_k)`` after removing the first k = 1..R patches ("morf": highest attribution
    sum first, "lerf": lowest first; Samek et al. 2015). Its mean over k (AOPC) is higher-better for MoRF."""
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' or 'lerf', got {order!r}")
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    rank, n = _patch_order(s, patch_size, descending=order == "morf")
    if isinstance(regions_evaluation, bool) or not isinstance(regions_evaluation, int) or regions_evaluation < 1:
        raise ValueError(f"regions_evaluation must be a positive integer, got {regions_evaluation!r}")
    r = min(regions_evaluation, n)
    return s.clean_scores()[:, None] - s.scores(r, lambda i, k: rank[i] <= k[:, None, None])


def selectivity(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                patch_size: int = 8, baseline: Baseline = "black", softmax: bool = True, rule: str = "abs_sum",
                batch_size: int | None = None, clean: torch.Tensor | None = None) -> torch.Tensor:
    """(B, patches) scores after removing each further patch, highest attribution sum first (Montavon et al.
    2018); its area (``curve_auc``, Quantus: dx = 1) is lower-better."""
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    rank, n = _patch_order(s, patch_size, descending=True)
    return s.scores(n, lambda i, k: rank[i] <= k[:, None, None])


def sensitivity_n(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                  features_in_step: int = 1, n_max_percentage: float = 0.8, baseline: Baseline = "black",
                  softmax: bool = True, rule: str = "abs_sum", batch_size: int | None = None,
                  clean: torch.Tensor | None = None) -> torch.Tensor:
    """Sensitivity-N as Quantus 0.6 computes it: pixels removed cumulatively, most relevant first; for each of the
    first ``n_max_percentage`` of the steps, the Pearson correlation across the images between the step's
    attribution sum and the score drop. Returns (steps,) values (NaN where undefined); higher is better."""
    if not 0 < n_max_percentage <= 1:
        raise ValueError(f"n_max_percentage must be in (0, 1], got {n_max_percentage}")
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    n = s.maps[0].numel()
    n_steps = _check_step(features_in_step, n)
    keep = int(n_max_percentage * n // features_in_step)
    if s.x.shape[0] < 2:
        raise ValueError("sensitivity_n correlates across images: give at least 2")
    rank = _rank(s.maps, descending=True)
    step = rank // features_in_step
    drops = s.clean_scores()[:, None] - s.scores(keep, lambda i, k: step[i] <= k[:, None, None])
    sums = _step_sums(s.maps, rank, features_in_step, n_steps)[:, :keep]
    return pearson(drops.T, sums.T)


def superpixels(inputs: torch.Tensor, method: str = "slic") -> torch.Tensor:
    """(B, H, W) superpixel labels from 0 of each image (scikit-image's SLIC or Felzenszwalb, default settings)."""
    from skimage.segmentation import felzenszwalb, slic

    if method not in ("slic", "felzenszwalb"):
        raise ValueError(f"segmentation method must be 'slic' or 'felzenszwalb', got {method!r}")
    out = []
    for img in inputs.detach().double().cpu().permute(0, 2, 3, 1).numpy():
        seg = slic(img, start_label=0) if method == "slic" else felzenszwalb(img)
        out.append(torch.from_numpy(np.asarray(seg, dtype=np.int64)))
    return torch.stack(out).to(inputs.device)


def irof(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
         segmentation: str = "slic", segments: torch.Tensor | None = None, baseline: Baseline = "mean",
         softmax: bool = True, rule: str = "abs_sum", batch_size: int | None = None,
         clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image IROF (Rieger & Hansen 2020): superpixels removed cumulatively by decreasing mean attribution, the
    score relative to the clean score after each, and the area over that curve (Quantus: number of segments minus
    the dx = 1 trapezoid); higher is better. ``segments`` (B, H, W) labels 0..K-1 replace the segmentation.

    The "mean" baseline is each image's own mean; Quantus 0.6 replaces with the mean of the whole batch's current
    (already perturbed) inputs, which changes with every step and with the other images of the batch.
    """
    s = _setup(model, inputs, maps, target, baseline, softmax, rule, batch_size, clean)
    b, h, w = s.maps.shape
    seg = superpixels(s.x, segmentation) if segments is None else torch.as_tensor(segments).long().to(s.x.device)
    if seg.shape != (b, h, w) or seg.min() < 0:
        raise ValueError(f"segments must be (B, H, W) = {(b, h, w)} labels from 0, got shape {tuple(seg.shape)}")
    k = int(seg.max()) + 1
    flat = seg.reshape(b, -1)
    count = torch.zeros(b, k, dtype=torch.float64, device=s.x.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float64))
    total = torch.zeros(b, k, dtype=torch.float64, device=s.x.device).scatter_add_(1, flat, s.maps.reshape(b, -1))
    present = count > 0
    mean = torch.where(present, total / count.clamp(min=1), torch.full_like(total, -float("inf")))
    order = torch.sort(mean, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(k, device=s.x.device).expand(b, -1).contiguous())
    pix_rank = rank.gather(1, flat).reshape(b, h, w)
    curve = s.scores(k, lambda i, j: pix_rank[i] <= j[:, None, None]) / s.clean_scores()[:, None]
    n_seg = present.sum(1)
    # Each image's area covers its own segments only (Quantus pads a batch to its longest list with zeros, so an
    # image with fewer segments than another gains half its last point).
    inside = torch.arange(1, k, device=s.x.device)[None] < n_seg[:, None]
    area = ((curve[:, 1:] + curve[:, :-1]) * 0.5 * inside).sum(1)
    return n_seg.double() - area
