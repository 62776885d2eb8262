"""Randomisation checks that are metrics (Quantus's randomisation family).

* Random logit (Sixt et al. 2020): how similar each image's map is to the map the same method gives for a random
  other class; lower is better (a map that ignores the class explains nothing about it). As Quantus 0.6: both
  maps divided by their largest |value| and compared by SSIM of the flattened maps (scikit-image, 1-D, its
  default window, the data range of the two together).

Quantus divides each batch of maps by the batch's largest value; here each map by its own, which is the same for
one image at a time (the tests compare that way).

* Smooth MPRT (Hedström et al. 2023): the model-parameter randomisation test on explanations averaged over noisy
  copies of the input; lower is better. Quantus 0.6 explains these copies with ``quantus.explain`` (the
  Captum-backed function, given ``explain_func_kwargs``), never with the ``explain_func`` it is handed, and its
  ``return_average_correlation`` averages the "original" entry (the given maps against the smoothed ones, near 1)
  with the layers' (it skips a key "orig" that does not exist). Here ``explain_fn`` explains and the figure is
  the mean over the randomised steps only.
* Efficient MPRT (Hedström et al. 2023): the relative rise of the maps' histogram entropy when every layer is
  randomised; higher is better.

The last two re-initialise the model's blocks with ``sanity.randomize`` (on a private copy).
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from interpretorch.explanation import Explanation
from interpretorch.core.targets import Target, image_target
from interpretorch.metrics._common import MapsLike, batched_rows, explanation_maps, prepare
from interpretorch.metrics.perturbation import spearman

__all__ = ["off_classes", "flat_ssim", "random_logit", "smooth_explain", "smooth_mprt", "histogram_entropy",
           "efficient_mprt"]

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
    if cl.classes is None:
        raise ValueError("random_logit explains another class: it needs class targets, not a callable target or "
                         "target objects")
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


# ------------------------------------------------------------------ smooth and efficient MPRT (Hedström et al. 2023)

Noise = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _steps(model: nn.Module, blocks: Sequence[str] | None, granularity: str, order: str, seed: int,
           reset_running_stats: bool) -> tuple[list[str], Iterator[tuple[str, nn.Module]]]:
    from interpretorch.sanity.randomize import plan_steps, randomization_blocks, randomized_models

    found = randomization_blocks(model, blocks, granularity)
    names = [n for n, _ in plan_steps(found, "cascading", order)]
    # Quantus re-seeds the global generator with ``seed + 1`` before every layer: "shared" seeding.
    return names, randomized_models(model, "cascading", found, init="reset", seed=int(seed) + 1, seeding="shared",
                                    order=order, reset_running_stats=reset_running_stats)


def smooth_explain(model: nn.Module, x: torch.Tensor, target: Target, explain_fn: ExplainFn, *,
                   nr_samples: int = 50, noise_magnitude: float = 0.1, noise: Noise | None = None,
                   generator: torch.Generator | None = None, batch_size: int | None = None) -> torch.Tensor:
    """(B, ...) maps of ``explain_fn`` averaged over ``nr_samples - 1`` noisy copies of ``x`` (Gaussian noise of std
    ``noise_magnitude`` x each image's value range) and ``x`` itself, as Quantus 0.6's smooth MPRT; ``noise(x,
    generator)`` may give the standard-normal draws of one copy of the batch. All copies are explained together,
    ``batch_size`` rows at a time."""
    if isinstance(nr_samples, bool) or not isinstance(nr_samples, int) or nr_samples < 1:
        raise ValueError(f"nr_samples must be a positive integer, got {nr_samples!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    b = x.shape[0]
    flat = x.reshape(b, -1)
    std = (noise_magnitude * (flat.amax(1) - flat.amin(1))).reshape(b, *([1] * (x.dim() - 1)))
    copies = []
    for _ in range(nr_samples - 1):
        z = noise(x, gen) if noise is not None else torch.randn(x.shape, generator=gen, dtype=torch.float64)
        copies.append(x + (torch.as_tensor(z).to(x.device, torch.float64) * std).to(x.dtype))
    copies.append(x)
    rows = torch.stack(copies, 0).reshape(nr_samples * b, *x.shape[1:])  # sample-major
    t = target.repeat(nr_samples) if isinstance(target, torch.Tensor) else target
    out = []
    for sl in batched_rows(rows.shape[0], batch_size):
        out.append(explanation_maps(explain_fn(model, rows[sl], t[sl] if isinstance(t, torch.Tensor) else t))
                   .detach().double().to(x.device))
    maps = torch.cat(out)
    return maps.reshape(nr_samples, b, *maps.shape[1:]).mean(0)


def smooth_mprt(model: nn.Module, inputs: torch.Tensor, maps: MapsLike | None = None, target: Target = "top1", *,
                explain_fn: ExplainFn, nr_samples: int = 50, noise_magnitude: float = 0.1, order: str = "bottom_up",
                blocks: Sequence[str] | None = None, granularity: str = "modules", reset_running_stats: bool = True,
                seed: int = 42, noise: Noise | None = None, absolute: bool = True, batch_size: int | None = None,
                clean: torch.Tensor | None = None) -> torch.Tensor:
    """(B, steps) Spearman correlations between each image's smoothed map (``smooth_explain``) on the trained
    model and on the model randomised cumulatively (``order`` "bottom_up", Quantus's default, or "top_down"), one
    step per block (``granularity`` "modules": every module holding parameters, as Quantus); lower is better.
    Blocks are re-initialised with their ``reset_parameters`` from ``seed + 1`` each (Quantus 0.6's draws). The
    given ``maps`` are not used: both sides are smoothed the same way."""
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    t: Target = image_target(scorer.target, cl.idx, slice(None))
    gen = torch.Generator().manual_seed(int(seed))
    kw = dict(nr_samples=nr_samples, noise_magnitude=noise_magnitude, noise=noise, generator=gen,
              batch_size=scorer.batch_size)
    b = x.shape[0]

    def prep(m: torch.Tensor) -> torch.Tensor:
        m = m.reshape(b, -1)
        return m.abs() if absolute else m

    original = prep(smooth_explain(model, x, t, explain_fn, **kw))
    _, models = _steps(model, blocks, granularity, order, seed, reset_running_stats)
    sims = [spearman(original, prep(smooth_explain(work, x, t, explain_fn, **kw))) for _, work in models]
    return torch.stack(sims, 1)


def histogram_entropy(maps: torch.Tensor, n_bins: int = 100) -> torch.Tensor:
    """(B,) Shannon entropy (nats) of the histogram of each flattened map's values in ``n_bins`` equal bins over
    its range (``np.histogram`` + ``scipy.stats.entropy``, as Quantus's ``discrete_entropy``)."""
    a = maps.reshape(maps.shape[0], -1).double()
    lo, hi = a.amin(1, keepdim=True), a.amax(1, keepdim=True)
    same = lo == hi
    lo, hi = torch.where(same, lo - 0.5, lo), torch.where(same, hi + 0.5, hi)
    edges = lo + (hi - lo) * torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=a.device)[None]
    idx = ((a - lo) * (n_bins / (hi - lo))).floor().long().clamp(0, n_bins - 1)
    # numpy's correction where floating point put a value across an edge
    idx = idx - (a < edges.gather(1, idx)).long()
    idx = idx + ((a >= edges.gather(1, idx + 1)) & (idx != n_bins - 1)).long()
    counts = torch.zeros(a.shape[0], n_bins, dtype=torch.float64, device=a.device).scatter_add_(
        1, idx, torch.ones_like(a))
    p = counts / counts.sum(1, keepdim=True)
    return -(p * torch.log(torch.where(p > 0, p, torch.ones_like(p)))).sum(1)


def efficient_mprt(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
                   explain_fn: ExplainFn, n_bins: int = 100, blocks: Sequence[str] | None = None,
                   granularity: str = "modules", reset_running_stats: bool = True, seed: int = 42,
                   batch_size: int | None = None, clean: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image efficient MPRT (Hedström et al. 2023): the relative rise ``(H(a') - H(a)) / H(a)`` of the
    histogram entropy (``histogram_entropy``) from the given maps ``a`` to ``explain_fn``'s maps ``a'`` on the
    fully randomised model (every block re-initialised as ``smooth_mprt``); higher is better. NaN where
    ``H(a)`` is 0."""
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b = x.shape[0]
    phi = explanation_maps(maps).detach().to(x.device)
    if phi.shape[0] != b:
        raise ValueError(f"got {phi.shape[0]} maps for {b} images")
    work = None
    for _, work in _steps(model, blocks, granularity, "bottom_up", seed, reset_running_stats)[1]:
        pass  # only the fully randomised model is explained (Quantus's skip_layers=True)
    t: Target = image_target(scorer.target, cl.idx, slice(None))
    out = []
    for sl in batched_rows(b, scorer.batch_size):
        out.append(explanation_maps(explain_fn(work, x[sl], t[sl] if isinstance(t, torch.Tensor) else t))
                   .detach().to(x.device))
    h0, h1 = histogram_entropy(phi, n_bins), histogram_entropy(torch.cat(out), n_bins)
    return torch.where(h0 != 0, (h1 - h0) / torch.where(h0 != 0, h0, torch.ones_like(h0)),
                       torch.full_like(h0, float("nan")))
