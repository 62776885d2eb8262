"""Faithfulness metrics: does the model's score follow what the map says matters?

* Average Drop %, % Increase in Confidence and Win % (Chattopadhyay et al. 2018, Grad-CAM++; the
  post-softmax form used by Wang et al. 2020, Score-CAM): the input multiplied by the min-max
  normalised map is scored against the clean input.
* Deletion and Insertion (Petsiuk et al. 2018, RISE): pixels in order of decreasing saliency are
  replaced by a substrate (deletion) or revealed over a blurred image (insertion); the score curve
  over the fraction of pixels changed and its trapezoidal area (x normalised to [0, 1]).
* ROAD (Rong et al. 2022): the most (MoRF) or least (LeRF) relevant pixels are removed and filled by
  noisy linear imputation (a sparse linear system per image and mask, solved with scipy.sparse).

Every function takes the maps it is given (an Explanation or a tensor) and never recomputes them;
the clean forward pass runs once per image (or is passed in as ``clean`` outputs), and perturbed
inputs go through the model ``batch_size`` rows at a time, without gradients, in eval mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from interpretorch.core.targets import Target
from interpretorch.metrics._common import (MapsLike, Substrate, batched_rows, descending_rank, make_substrate,
                                           maps_2d, normalized_maps, prepare, sequence_scores, step_counts,
                                           trapezoid_auc)

ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


@dataclass
class Confidence:
    """Scores of the clean inputs and of the inputs multiplied by their normalised maps (one per image)."""

    clean: torch.Tensor
    masked: torch.Tensor

    @property
    def drop(self) -> torch.Tensor:
        """Per-image relative drop ``max(0, Y - O) / Y`` (NaN where the clean score Y is not positive)."""
        y, o = self.clean, self.masked
        ok = y > 0
        return torch.where(ok, torch.clamp(y - o, min=0) / torch.where(ok, y, torch.ones_like(y)),
                           torch.full_like(y, float("nan")))

    @property
    def increase(self) -> torch.Tensor:
        """Per-image indicator (0. or 1.) that the masked input scores higher than the clean one."""
        return (self.masked > self.clean).to(self.clean.dtype)

    @property
    def average_drop(self) -> float:
        """Average Drop in percent (lower is better)."""
        return float(torch.nanmean(self.drop) * 100)

    @property
    def increase_in_confidence(self) -> float:
        """% Increase in Confidence (higher is better)."""
        return float(self.increase.mean() * 100)


def confidence(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
               softmax: bool = True, baseline: Substrate = "zeros", rule: str = "abs_sum",
               batch_size: int | None = None, clean: torch.Tensor | None = None, **substrate_kw) -> Confidence:
    """Score each input multiplied by its min-max normalised map (Grad-CAM++ protocol) beside the clean score.

    The masked input is ``baseline + map * (x - baseline)``; with the default zero baseline that is
    ``x * map`` in the model's input space. ``softmax`` scores class probabilities (Score-CAM's
    post-softmax variant; ``False`` uses logits). ``clean`` may pass the clean outputs (B, K) to reuse.
    """
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    m = normalized_maps(maps, x, rule)[:, None]
    base = make_substrate(x, baseline, **substrate_kw)
    masked = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for sl in batched_rows(x.shape[0], scorer.batch_size):
        xm = base[sl] + m[sl] * (x[sl] - base[sl])
        masked[sl] = scorer.forward_scores(xm, None if cl.idx is None else cl.idx[sl], softmax)
    return Confidence(cl.scores(scorer, softmax), masked)


def average_drop(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1",
                 **kw) -> float:
    """Average Drop % of the maps (Chattopadhyay et al. 2018): mean of max(0, Y - O) / Y, in percent."""
    return confidence(model, inputs, maps, target, **kw).average_drop


def increase_in_confidence(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1",
                           **kw) -> float:
    """% Increase in Confidence of the maps: percent of images where the masked input scores higher."""
    return confidence(model, inputs, maps, target, **kw).increase_in_confidence


def win_percentage(drops: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-image Win % of each method: 100 where its drop is the lowest among ``drops`` (ties share the win).

    Returns, for each method, a (B,) tensor whose mean is the method's Win %; the methods' values
    add up to 100 per image (images where every drop is NaN count for nobody).
    """
    if not drops:
        return {}
    names = list(drops)
    d = torch.stack([torch.as_tensor(drops[n]).float() for n in names])  # (M, B)
    if d.dim() != 2:
        raise ValueError("each method's drops must be a (B,) tensor of the same length")
    filled = torch.where(torch.isnan(d), torch.full_like(d, float("inf")), d)
    best = filled.min(dim=0).values
    winners = (filled == best) & torch.isfinite(filled)
    share = 100.0 * winners.float() / winners.sum(0).clamp(min=1)
    return {n: share[i] for i, n in enumerate(names)}


@dataclass
class Curve:
    """Scores (B, S+1) after changing the first ``fractions`` (S+1,) of the pixels, in saliency order."""

    fractions: torch.Tensor
    scores: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        """Per-image trapezoidal area under the curve over the fraction of pixels changed ([0, 1] on x)."""
        return trapezoid_auc(self.fractions, self.scores)

    def to_dict(self) -> dict:
        """JSON-ready: value (mean AUC), per_image AUCs, x fractions, mean curve and per-image curves."""
        auc = self.auc
        return {"value": float(auc.mean()), "per_image": auc.tolist(), "x": self.fractions.tolist(),
                "curve": self.scores.mean(0).tolist(), "curves": self.scores.tolist()}


def _pixel_curve(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target, *, insert: bool,
                 step: float | int, substrate: Substrate, softmax: bool, rule: str, batch_size: int | None,
                 clean: torch.Tensor | None, blur_sigma: float, blur_kernel: int) -> Curve:
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b, _, h, w = x.shape
    rank = descending_rank(maps_2d(maps, x, rule))[:, None]  # (B, 1, H, W)
    counts = step_counts(h * w, step).to(x.device)
    n_steps = counts.numel() - 1
    sub = make_substrate(x, substrate, blur_sigma=blur_sigma, blur_kernel=blur_kernel)
    scores = torch.empty(b, n_steps + 1, dtype=x.dtype, device=x.device)
    clean_scores = cl.scores(scorer, softmax)
    # Deletion reuses the clean score at step 0, insertion at the last step: S passes per image.
    if insert:
        scores[:, -1] = clean_scores
        ks = torch.arange(0, n_steps, device=x.device)
    else:
        scores[:, 0] = clean_scores
        ks = torch.arange(1, n_steps + 1, device=x.device)
    def rows(i: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        changed = rank[i] < counts[k].view(-1, 1, 1, 1)
        return torch.where(changed, x[i], sub[i]) if insert else torch.where(changed, sub[i], x[i])

    # each row changes one step's pixels of the row before: run so, recomputing only where they changed
    seq = sequence_scores(scorer, x, cl.idx, ks.numel(), lambda i, j: rows(i, ks[j].expand(i.numel())), softmax)
    if seq is not None:
        scores[:, ks] = seq.to(scores.dtype)
    else:
        img = torch.arange(b, device=x.device).repeat_interleave(ks.numel())
        kk = ks.repeat(b)
        for sl in batched_rows(img.numel(), scorer.batch_size):
            i, k = img[sl], kk[sl]
            scores[i, k] = scorer.forward_scores(rows(i, k), None if cl.idx is None else cl.idx[i], softmax)
    fractions = counts.double().cpu() / (h * w)
    return Curve(fractions, scores)


def deletion(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
             step: float | int = 0.01, substrate: Substrate = "zeros", softmax: bool = True,
             rule: str = "abs_sum", batch_size: int | None = None, clean: torch.Tensor | None = None,
             blur_sigma: float = 5.0, blur_kernel: int = 11) -> Curve:
    """Deletion curve (RISE): replace pixels by ``substrate`` in order of decreasing saliency; lower AUC is better.

    ``step`` is a fraction of the pixels per step (default 1%) or an int pixel count; ``substrate`` is
    "zeros" (in the model's input space), "mean" (per-image channel means), "blur", a number or a
    tensor. All channels of a pixel change together; ties in the map keep raster order.
    """
    return _pixel_curve(model, inputs, maps, target, insert=False, step=step, substrate=substrate,
                        softmax=softmax, rule=rule, batch_size=batch_size, clean=clean,
                        blur_sigma=blur_sigma, blur_kernel=blur_kernel)


def insertion(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
              step: float | int = 0.01, substrate: Substrate = "blur", softmax: bool = True,
              rule: str = "abs_sum", batch_size: int | None = None, clean: torch.Tensor | None = None,
              blur_sigma: float = 5.0, blur_kernel: int = 11) -> Curve:
    """Insertion curve (RISE): reveal pixels of the input over a blurred copy in order of decreasing saliency.

    Higher AUC is better. The default substrate is RISE's: a Gaussian blur (11 x 11 kernel, sigma 5).
    """
    return _pixel_curve(model, inputs, maps, target, insert=True, step=step, substrate=substrate,
                        softmax=softmax, rule=rule, batch_size=batch_size, clean=clean,
                        blur_sigma=blur_sigma, blur_kernel=blur_kernel)


# ---------------------------------------------------------------------------------------------- ROAD

_NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6),
               (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))


class LinearImputer:
    """Noisy linear imputation (Rong et al. 2022) for one (H, W) mask of removed pixels.

    Each removed pixel is asked to equal the weighted mean of its in-image neighbours (weight 1/6
    for the 4 direct, 1/12 for the 4 diagonal ones); known neighbours move to the right-hand side.
    The sparse system is built and factorised once and solves all channels of an image together.
    """

    def __init__(self, removed: torch.Tensor) -> None:
        from scipy import sparse
        from scipy.sparse.linalg import splu

        mask = removed.detach().cpu().numpy().astype(bool)
        if mask.ndim != 2:
            raise ValueError(f"the removed-pixel mask must be (H, W), got shape {mask.shape}")
        h, w = mask.shape
        self.shape = (h, w)
        self.flat = np.flatnonzero(mask)
        n = self.flat.size
        if n == h * w:
            raise ValueError("cannot impute an image with every pixel removed")
        var = np.full(h * w, -1, dtype=np.int64)
        var[self.flat] = np.arange(n)
        ys, xs = np.divmod(self.flat, w)
        diag = np.zeros(n)
        rows, cols, vals = [], [], []
        known_rows, known_pix, known_w = [], [], []
        for dy, dx, wt in _NEIGHBOURS:
            ny, nx = ys + dy, xs + dx
            ok = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
            src = np.flatnonzero(ok)
            nb = ny[ok] * w + nx[ok]
            diag[src] += wt
            unknown = var[nb] >= 0
            rows.append(src[unknown])
            cols.append(var[nb[unknown]])
            vals.append(np.full(int(unknown.sum()), -wt))
            known_rows.append(src[~unknown])
            known_pix.append(nb[~unknown])
            known_w.append(np.full(int((~unknown).sum()), wt))
        rows.append(np.arange(n))
        cols.append(np.arange(n))
        vals.append(diag)
        a = sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        # b = K @ x_flat: the known neighbours' weighted values, for every channel at once.
        self._known = sparse.csr_matrix((np.concatenate(known_w), (np.concatenate(known_rows),
                                                                    np.concatenate(known_pix))), shape=(n, h * w))
        # A is symmetric positive definite (every hole touches a known pixel): a symmetric ordering
        # keeps the fill-in of the factorisation low.
        self._lu = splu(a, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}) if n else None

    def __call__(self, image: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        """Return ``image`` (C, H, W) with the removed pixels imputed, plus N(0, noise^2) on them."""
        c, h, w = image.shape
        if (h, w) != self.shape:
            raise ValueError(f"image of size {(h, w)} does not match the imputer's mask {self.shape}")
        if self._lu is None:
            return image.clone()
        x = image.detach().double().cpu().reshape(c, h * w).numpy()
        sol = self._lu.solve(np.ascontiguousarray((self._known @ x.T)))  # (n, C)
        out = image.detach().double().cpu().reshape(c, h * w).clone()
        vals = torch.from_numpy(sol.T.copy())
        if noise:
            vals = vals + noise * torch.randn(vals.shape, generator=generator, dtype=vals.dtype)
        out[:, torch.from_numpy(self.flat)] = vals
        return out.reshape(c, h, w).to(device=image.device, dtype=image.dtype)


def noisy_linear_imputation(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the ``removed`` (H, W) pixels of ``image`` (C, H, W) by noisy linear imputation (ROAD)."""
    return LinearImputer(removed)(image, noise, generator)


@dataclass
class RoadResult:
    """ROAD scores and correctness (B, P) at each removal percentage, for MoRF and / or LeRF order."""

    percentages: torch.Tensor
    morf_scores: torch.Tensor | None = None
    morf_correct: torch.Tensor | None = None
    lerf_scores: torch.Tensor | None = None
    lerf_correct: torch.Tensor | None = None

    def curve(self, order: str = "morf", kind: str = "correct") -> torch.Tensor:
        """Mean over images of ``kind`` ("correct" = accuracy, or "scores") per percentage, for ``order``."""
        t = getattr(self, f"{order}_{kind}")
        if t is None:
            raise ValueError(f"ROAD was not run in {order!r} order" if kind == "scores" or
                             getattr(self, f"{order}_scores") is None else
                             "accuracy needs class targets; use kind='scores' for a callable target")
        return t.float().mean(0)

    def to_dict(self, order: str) -> dict:
        """JSON-ready summary of one order: value (mean accuracy, or mean score), curves per percentage."""
        scores, correct = getattr(self, f"{order}_scores"), getattr(self, f"{order}_correct")
        main = correct.float() if correct is not None else scores
        return {"value": float(main.mean()), "per_image": main.mean(1).tolist(), "x": self.percentages.tolist(),
                "curve": main.mean(0).tolist(), "score_curve": scores.mean(0).tolist(), "curves": main.tolist(),
                "measure": "accuracy" if correct is not None else "score"}


def road(model: nn.Module, inputs: torch.Tensor, maps: MapsLike, target: Target = "top1", *,
         percentages: Sequence[float] = ROAD_PERCENTAGES, order: str = "both", noise: float = 0.01,
         seed: int = 0, softmax: bool = True, rule: str = "abs_sum", batch_size: int | None = None,
         clean: torch.Tensor | None = None) -> RoadResult:
    """ROAD (Rong et al. 2022): remove the top (MoRF) / bottom (LeRF) p% pixels, impute them, re-score.

    ``floor(H * W * p / 100)`` pixels are removed at each percentage and filled by noisy linear
    imputation with N(0, ``noise``^2) added (seeded by ``seed``). Returns per-image target scores and,
    for class targets, whether the target class is still the top-1 prediction (ROAD's accuracy).
    Low MoRF and high LeRF values are good.
    """
    if order not in ("morf", "lerf", "both"):
        raise ValueError(f"order must be 'morf', 'lerf' or 'both', got {order!r}")
    pct = torch.as_tensor(list(percentages), dtype=torch.float64)
    if pct.numel() == 0 or (pct < 0).any() or (pct >= 100).any():
        raise ValueError(f"percentages must lie in [0, 100), got {list(percentages)}")
    scorer, cl = prepare(model, inputs, target, batch_size, clean)
    x = cl.inputs
    b, _, h, w = x.shape
    rank = descending_rank(maps_2d(maps, x, rule))  # (B, H, W)
    n_removed = [int(h * w * float(p) / 100) for p in pct]
    orders = ["morf", "lerf"] if order == "both" else [order]
    gen = torch.Generator().manual_seed(int(seed))
    n_pct = len(n_removed)
    scores = torch.empty(len(orders), b, n_pct, dtype=x.dtype, device=x.device)
    correct = torch.zeros(len(orders), b, n_pct, dtype=torch.bool, device=x.device)
    # (order, image, percentage) rows, batched through the model together; each imputation
    # operator is built once for its image and mask and used once.
    rows = [(o, i, j) for o in range(len(orders)) for i in range(b) for j in range(n_pct)]
    for sl in batched_rows(len(rows), scorer.batch_size):
        chunk = rows[sl]
        batch = []
        for o, i, j in chunk:
            k = n_removed[j]
            removed = rank[i] < k if orders[o] == "morf" else rank[i] >= h * w - k
            batch.append(LinearImputer(removed)(x[i], noise, gen))
        oo, ii, jj = (torch.tensor(c, device=x.device) for c in zip(*chunk))
        out = scorer.outputs(torch.stack(batch))
        idx = None if cl.idx is None else cl.idx[ii]
        scores[oo, ii, jj] = scorer.scores(out, idx, softmax)
        if cl.classes is not None:
            correct[oo, ii, jj] = out.argmax(1) == idx
    result = RoadResult(pct)
    for n, o in enumerate(orders):
        setattr(result, f"{o}_scores", scores[n])
        setattr(result, f"{o}_correct", correct[n] if cl.classes is not None else None)
    return result
