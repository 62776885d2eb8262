"""Randomisation checks that are metrics (Quantus's randomisation family).

* Random logit (Sixt et al. 2020): how similar each image's map is to the map the same method gives for a random
  other class; lower is better (a map that ignores the class explains nothing about it). As Quantus 0.6: both
  maps divided by their largest |value| and compared by SSIM of the flattened maps (scikit-image, 1-D, its
  default window, the data range of the two together).

Quantus divides each batch of maps by the batch's largest value; here each map by its own, which is the same for
one image at a time (the tests compare that way).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from interpretorch.explanation import Explanation
from interpretorch.core.targets import Target
from interpretorch.metrics._common import MapsLike, batched_rows, explanation_maps, prepare

__all__ = ["off_classes", "flat_ssim", "random_logit"]

ExplainFn = Callable[[nn.Module, torch.Tensor, Target], Explanation]


def off_classes(classes: torch.Tensor, n_classes: int, seed: int = 42) -> torch.Tensor:
    """One class per image drawn uniformly from the ``n_classes`` other than ``classes`` (B,), from ``seed``."""
    if n_classes < 2:
        raise ValueError(f"a random other class needs at least 2 classes, got {n_classes}")
    gen = torch.Generator().manual_seed(int(seed))
    pick = torch.randint(0, n_classes - 1, (classes.shape[0],), generator=gen).to(classes.device)
    return pick + (pick >= classes).long()


def flat_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of each pair of (B, ...) maps flattened to 1-D (scikit-image's, default window, the pair's joint range)."""
    from skimage.metrics import structural_similarity

    out = []
    for aa, bb in zip(a.reshape(a.shape[0], -1).double().cpu().numpy(), b.reshape(b.shape[0], -1).double().cpu().numpy()):
        both = np.concatenate([aa, bb])
        out.append(structural_similarity(aa, bb, data_range=float(abs(both.max() - both.min()))))
    return torch.tensor(out, dtype=torch.float64, device=a.device)


def _max_normalised(v: torch.Tensor) -> torch.Tensor:
    flat = v.reshape(v.shape[0], -1).double()
    top = flat.abs().amax(1, keepdim=True)
    return (flat / torch.where(top > 0, top, torch.ones_like(top))).reshape(v.shape)


def random_logit(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                 explain_fn: ExplainFn, seed: int = 42, classes: torch.Tensor | None = None,
                 normalise: bool = True, batch_size: int | None = None,
                 clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image random-logit similarity: SSIM between the maps and ``explain_fn``'s maps for a random other class
    (drawn from ``seed``, or ``classes`` (B,) given); lower is better. Needs class targets (not a callable)."""
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    if cl.idx is None:
        raise ValueError("random_logit explains another class: it needs class targets, not a callable target")
    b = cl.inputs.shape[0]
    off = off_classes(cl.idx, cl.outputs.shape[1], seed) if classes is None else torch.as_tensor(classes).long()
    off = off.to(cl.inputs.device)
    if off.shape != (b,) or (off == cl.idx).any():
        raise ValueError(f"classes must hold one class per image ({b}), each other than the explained one")
    phi = explanation_maps(maps).detach().to(cl.inputs.device)
    other = []
    for sl in batched_rows(b, scorer.batch_size):
        other.append(explanation_maps(explain_fn(model, cl.inputs[sl], off[sl])).detach().to(cl.inputs.device))
    alt = torch.cat(other)
    if alt.shape != phi.shape:
        raise ValueError(f"explain_fn returned maps of shape {tuple(alt.shape)}; expected {tuple(phi.shape)}")
    if normalise:
        phi, alt = _max_normalised(phi), _max_normalised(alt)
    return flat_ssim(phi, alt)
