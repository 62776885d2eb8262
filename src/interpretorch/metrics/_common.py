"""Shared plumbing of the metrics: map checks, substrates, and batched scoring forward passes."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Union

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.folded import forward_only_rows
from interpretorch.attribution.incremental import IncrementalRows, incremental_rows
from interpretorch.attribution.layout import in_layout
from interpretorch.capture import frozen
from interpretorch.core import check_inputs, model_device
from interpretorch.core.batching import check_batch_size, chunks, group_steps, rows_per_pass
from interpretorch.core.target_objects import output_rows
from interpretorch.core.targets import (Target, check_finite, check_target, concat_outputs, is_target_object,
                                        target_indices, target_scores)
from interpretorch.explanation import Explanation, normalize_maps, reduce_channels, upsample
from interpretorch.imageops import gaussian_blur

MapsLike = Union[Explanation, torch.Tensor]
Substrate = Union[str, float, int, torch.Tensor]
SUBSTRATES = ("zeros", "mean", "blur")


def explanation_maps(maps: MapsLike) -> torch.Tensor:
    """Return the raw map tensor of an Explanation or a tensor."""
    if isinstance(maps, Explanation):
        return maps.maps
    if isinstance(maps, torch.Tensor):
        return maps
    raise TypeError(f"maps must be an Explanation or a tensor, got {type(maps).__name__}")


def maps_2d(maps: MapsLike, inputs: torch.Tensor, rule: str = "abs_sum") -> torch.Tensor:
    """Return (B, H, W) float maps at the inputs' resolution and device; channel maps are reduced by ``rule``."""
    m = explanation_maps(maps).detach()
    b, c = inputs.shape[:2]
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() == 4:
        if m.shape[1] != c:
            raise ValueError(f"pixel attributions have {m.shape[1]} channels but the inputs have {c}")
        m = reduce_channels(m, rule)
    if m.dim() != 3:
        raise ValueError(f"maps must have shape (B, H, W) or (B, C, H, W), got {tuple(m.shape)}")
    if m.shape[0] != b:
        raise ValueError(f"got {m.shape[0]} maps for {b} images")
    if not m.is_floating_point():
        m = m.float()
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    m = m.to(device=inputs.device, dtype=inputs.dtype)
    return upsample(m, tuple(inputs.shape[-2:]))


def attributions(maps: MapsLike, inputs: torch.Tensor) -> torch.Tensor:
    """Return attributions broadcastable to the inputs: (B, C, H, W) as given, or (B, 1, H, W) for 2-D maps."""
    m = explanation_maps(maps).detach()
    b, c, h, w = inputs.shape
    if m.dim() == 3:
        m = m[:, None]
    if m.dim() != 4 or m.shape[0] != b or m.shape[1] not in (1, c):
        raise ValueError(f"maps of shape {tuple(explanation_maps(maps).shape)} do not fit inputs of shape "
                         f"{tuple(inputs.shape)}; expected (B, H, W), (B, 1, H, W) or (B, C, H, W)")
    if not torch.isfinite(m).all():
        raise ValueError("maps contain NaN or infinite values")
    m = m.to(device=inputs.device, dtype=inputs.dtype)
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return m


def normalized_maps(maps: MapsLike, inputs: torch.Tensor, rule: str = "abs_sum") -> torch.Tensor:
    """Return (B, H, W) maps min-max scaled to [0, 1] per image (constant maps become zeros)."""
    return normalize_maps(maps_2d(maps, inputs, rule))


def descending_rank(maps: torch.Tensor) -> torch.Tensor:
    """Return, for (B, H, W) maps, each pixel's position when pixels are sorted by decreasing value.

    Ties keep raster order (a stable sort), so a constant map removes pixels row by row.
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand(b, -1).contiguous())
    return rank.reshape(maps.shape)


def make_substrate(x: torch.Tensor, substrate: Substrate, *, blur_sigma: float = 5.0,
                   blur_kernel: int = 11) -> torch.Tensor:
    """Return the (B, C, H, W) images that removed pixels are replaced by (zeros, mean, blur, a value or a tensor)."""
    if isinstance(substrate, str):
        if substrate == "zeros":
            return torch.zeros_like(x)
        if substrate == "mean":
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
        if substrate == "blur":
            return gaussian_blur(x, blur_sigma, blur_kernel)
        raise ValueError(f"unknown substrate {substrate!r}; use one of {SUBSTRATES}, a number or a tensor")
    if isinstance(substrate, (int, float)) and not isinstance(substrate, bool):
        return torch.full_like(x, float(substrate))
    if isinstance(substrate, torch.Tensor):
        s = substrate.to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(s, x.shape).contiguous()
        except RuntimeError as e:
            raise ValueError(f"a substrate tensor of shape {tuple(s.shape)} does not broadcast to the inputs' "
                             f"shape {tuple(x.shape)}") from e
    raise TypeError(f"substrate must be one of {SUBSTRATES}, a number or a tensor, got {type(substrate).__name__}")


def step_counts(n_pixels: int, step: float | int) -> torch.Tensor:
    """Return the cumulative number of pixels changed after each step: [0, n_1, ..., n_pixels].

    A float ``step`` in (0, 1] is a fraction of the image (``ceil(1/step)`` equal steps, rounded to
    whole pixels); an int is a number of pixels per step (the last step may be smaller).
    """
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise TypeError(f"step must be a fraction in (0, 1] or a positive number of pixels, got {step!r}")
    if isinstance(step, float):
        if not 0.0 < step <= 1.0:
            raise ValueError(f"a fractional step must lie in (0, 1], got {step}; give an int for a pixel count")
        n_steps = math.ceil(1.0 / step - 1e-9)
        k = torch.arange(n_steps + 1, dtype=torch.float64)
        return torch.round(k * n_pixels / n_steps).long()
    if step < 1:
        raise ValueError(f"a pixel step must be a positive integer, got {step}")
    n_steps = math.ceil(n_pixels / step)
    return torch.clamp(torch.arange(n_steps + 1) * step, max=n_pixels).long()


def trapezoid_auc(fractions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Area under (B, S+1) curves sampled at ``fractions`` in [0, 1] by the trapezoidal rule."""
    dx = (fractions[1:] - fractions[:-1]).to(scores.dtype).to(scores.device)
    return ((scores[:, 1:] + scores[:, :-1]) * 0.5 * dx).sum(dim=1)


@dataclass
class Scorer:
    """Batched, gradient-free forward passes returning each row's target score (or class outputs)."""

    model: nn.Module
    target: Target
    batch_size: int | None = None
    forwarded: int = 0
    forward_only: bool = False  # perturbed rows run on forward_only_model (set once the clean outputs are tensors)

    def __post_init__(self) -> None:
        self.batch_size = rows_per_pass(self.batch_size, model_device(self.model))

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Return the model's outputs for (N, C, H, W) inputs, ``batch_size`` rows at a time, in eval mode."""
        outs = []
        with frozen(self.model):
            # no gradients: on the CPU, folded BatchNorms, in-place activations, channels-last rows (the same function)
            net, layout = forward_only_rows(self.model, x) if self.forward_only else (self.model, None)
            for sl in chunks(x.shape[0], self.batch_size):
                out = net(x[sl] if layout is None else in_layout(x[sl], layout))
                check_finite(out)
                outs.append(out)
        self.forwarded += x.shape[0]
        return torch.cat(outs) if isinstance(outs[0], torch.Tensor) else concat_outputs(outs)

    def sequence_rows(self, x: torch.Tensor) -> int | None:
        """How many of the images ``x`` one sequence of rows may hold (``batch_size``, fewer where their kept maps
        would pass ``STATE_BYTES``), or None where the model cannot run rows incrementally."""
        if not self.forward_only:
            return None
        probe = incremental_rows(self.model, x[:self.batch_size])
        return None if probe is None else max(1, min(self.batch_size, probe.rows_within()))

    def sequence(self, x: torch.Tensor) -> IncrementalRows | None:
        """An ``IncrementalRows`` started on the (B, C, H, W) images ``x`` (their clean rows), whose next rows
        each recompute only where they differ from the image's row before; None where the model cannot run so."""
        if not self.forward_only or x.shape[0] > self.batch_size:
            return None
        run = incremental_rows(self.model, x)
        if run is None:
            return None
        with torch.no_grad():
            check_finite(run.start(x))
        return run

    def step(self, run: IncrementalRows, x: torch.Tensor) -> torch.Tensor:
        """The outputs of rows ``x`` that continue ``run``'s last rows of the same images."""
        with torch.no_grad():
            out = run.step(x)
        check_finite(out)
        self.forwarded += x.shape[0]
        return out

    def scores(self, outputs: torch.Tensor, idx: torch.Tensor | None, softmax: bool) -> torch.Tensor:
        """Return the target score of each output row: the class probability (``softmax``) or logit, or the callable's."""
        return target_scores(outputs, self.target, idx, "softmax" if softmax else "logit")

    def forward_scores(self, x: torch.Tensor, idx: torch.Tensor | None, softmax: bool) -> torch.Tensor:
        """Return the target scores of (N, C, H, W) inputs whose rows explain classes ``idx`` (N,)."""
        return self.scores(self.outputs(x), idx, softmax)


def sequence_scores(scorer: Scorer, x: torch.Tensor, idx: torch.Tensor | None, n_steps: int,
                    rows: Callable[[torch.Tensor, int], torch.Tensor], softmax: bool) -> torch.Tensor | None:
    """(B, n_steps) float64 target scores of the rows ``rows(images, k)`` of images ``x`` (classes ``idx``), run
    step after step for a group of images at a time so that each row recomputes only where it differs from the
    same image's row before (``IncrementalRows``); None where the model cannot run rows so."""
    b = x.shape[0]
    size = scorer.sequence_rows(x)
    if size is None:
        return None
    out = torch.empty(b, n_steps, dtype=torch.float64, device=x.device)
    run = None
    for sl, k in group_steps(b, size, n_steps):
        img = torch.arange(b, device=x.device)[sl]
        if k == 0:
            run = scorer.sequence(x[img])
            if run is None:
                return None
        cls = None if idx is None else idx[img]
        out[img, k] = scorer.scores(scorer.step(run, rows(img, k)), cls, softmax).double()
    return out


@dataclass
class Clean:
    """The clean forward pass, run once per image and shared by every metric."""

    inputs: torch.Tensor
    outputs: torch.Tensor
    idx: torch.Tensor | None
    target_objects: bool = False

    @property
    def classes(self) -> torch.Tensor | None:
        """The explained class of each image, None for callable targets and target objects (whose ``idx`` are the
        images' own indices, which route perturbed rows to their image's target)."""
        return None if self.target_objects else self.idx

    def scores(self, scorer: Scorer, softmax: bool) -> torch.Tensor:
        """Return the clean target score of each image."""
        return scorer.scores(self.outputs, self.idx, softmax)


def prepare(model: nn.Module, inputs: torch.Tensor, target: Target, batch_size: int | None,
            clean: torch.Tensor | None = None) -> tuple[Scorer, Clean]:
    """Validate inputs, and run (or reuse) the clean forward pass: returns the scorer and the clean pass."""
    check_batch_size(batch_size)
    x = check_inputs(model, inputs)
    target = check_target(target, x.shape[0])
    scorer = Scorer(model, target, batch_size)
    if clean is None:
        # the same network as the perturbed rows (the forward-only copy where it keeps the model's function, else
        # the model: a detector's dicts), so a score drop compares two outputs of one function
        scorer.forward_only = True
        outputs = scorer.outputs(x)
    else:
        if isinstance(clean, torch.Tensor):
            outputs = clean.detach().to(model_device(model))
        else:  # a list of per-image dicts (detections) or a dict / ModelOutput of tensors
            outputs = concat_outputs([clean])
        if output_rows(outputs) != x.shape[0]:
            raise ValueError(f"clean outputs hold {output_rows(outputs)} rows for {x.shape[0]} images")
    # perturbed rows run on the forward-only copy where the outputs are one tensor (a detector's dicts: the copy's
    # one-image checks would not apply)
    scorer.forward_only = isinstance(outputs, torch.Tensor)
    idx = target_indices(outputs, target)
    return scorer, Clean(x, outputs, idx, is_target_object(target))


def batched_rows(n_rows: int, batch_size: int | None) -> Iterator[slice]:
    """Slices of ``batch_size`` rows over ``n_rows`` perturbed inputs (the default rule when None)."""
    return chunks(n_rows, batch_size)
