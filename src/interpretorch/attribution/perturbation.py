"""Perturbation attributions: Occlusion (Zeiler & Fergus 2014) and RISE (Petsiuk et al. 2018).

Both only run the model forward, on perturbed copies of the images. The copies of all images go
through the model together, ``batch_size`` rows at a time, and are built on the model's device
chunk by chunk (never all at once). Maps are (B, H, W).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import as_baseline, check_inputs, chunks, clean_pass, row_scores, seed_for
from interpretorch.capture import capture
from interpretorch.explanation import Explanation
from interpretorch.targets import Target, check_finite


def _pair(v: int | tuple[int, int], what: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(k, int) and k >= 1 for k in t):
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {v!r}")
    return t  # type: ignore[return-value]


def _starts(size: int, window: int, stride: int) -> torch.Tensor:
    """Window origins along one axis: 0, stride, ... until the image is covered (the last window may be cut off
    by the border, as in Captum)."""
    return torch.arange(-(-(size - window) // stride) + 1) * stride


def _run_perturbed(model: nn.Module, x: torch.Tensor, rows_fn, n_rows: int, target: Target,
                   idx: torch.Tensor | None, score: str, batch_size: int | None, what: str, accumulate) -> None:
    """Score ``n_rows`` perturbed rows built chunk by chunk by ``rows_fn(perturbation, image)`` and hand each
    chunk's (image indices, scores, what rows_fn returned beside the rows) to ``accumulate``."""
    b = x.shape[0]
    with capture(model, [], grad=False), torch.no_grad():
        for sl in chunks(n_rows, batch_size):
            r = torch.arange(sl.start, sl.stop, device=x.device)
            i = r % b  # rows are perturbation-major: row r = perturbation r // b of image r % b
            rows, extra = rows_fn(r // b, i)
            o = model(rows)
            check_finite(o, f"outputs on {what}")
            accumulate(i, row_scores(o, target, None if idx is None else idx[i], score), extra)


def occlusion(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
              window: int | tuple[int, int] = 16, stride: int | tuple[int, int] = 8,
              baseline: float | torch.Tensor = 0.0, score: str = "logit", batch_size: int = 64) -> Explanation:
    """Occlusion (Zeiler & Fergus 2014): the drop of the target score when a window is set to ``baseline``,
    averaged over the windows covering each pixel.

    Windows cover all channels and slide by ``stride`` from the top-left corner until the image is
    covered (the last one may be cut off by the border), as Captum's ``Occlusion`` with a
    (C, h, w) window. ``score``: "logit" (Captum) or "softmax" (the class probability); a callable
    target defines its own score. ``baseline``: a number or a tensor broadcastable to the inputs.
    """
    x = check_inputs(model, inputs)
    b, _, h, w = x.shape
    (kh, kw), (sh, sw) = _pair(window, "window"), _pair(stride, "stride")
    if kh > h or kw > w:
        raise ValueError(f"window {(kh, kw)} is larger than the images {(h, w)}")
    if (sh > kh and kh < h) or (sw > kw and kw < w):
        raise ValueError(f"stride {(sh, sw)} is larger than window {(kh, kw)}: some pixels would never be occluded")
    base = as_baseline(baseline, x)
    ys, xs = _starts(h, kh, sh).to(x.device), _starts(w, kw, sw).to(x.device)
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_y = (ar_h >= ys[:, None]) & (ar_h < ys[:, None] + kh)  # (ny, H)
    in_x = (ar_w >= xs[:, None]) & (ar_w < xs[:, None] + kw)  # (nx, W)
    nx = len(xs)
    count = in_y.sum(0).to(x.dtype)[:, None] * in_x.sum(0).to(x.dtype)[None, :]

    def rows_fn(p: torch.Tensor, i: torch.Tensor):
        mask = in_y[p // nx][:, :, None] & in_x[p % nx][:, None, :]  # (n, H, W)
        return torch.where(mask[:, None], base[i], x[i]), mask

    idx, out = clean_pass(model, x, target, batch_size)
    clean = row_scores(out, target, idx, score)
    total = torch.zeros(b, h, w, dtype=x.dtype, device=x.device)
    _run_perturbed(model, x, rows_fn, len(ys) * nx * b, target, idx, score, batch_size, "occluded inputs",
                   lambda i, s, mask: total.index_add_(0, i, (clean[i] - s).to(x.dtype)[:, None, None] * mask))
    return Explanation(maps=total / count, method="occlusion", target=idx, scores=clean,
                       extras={"window": (kh, kw), "stride": (sh, sw), "score": score})


class RiseMasks:
    """The ``n`` random masks of RISE for (H, W) images, rendered on demand, the same for every chunking.

    Each mask is a ``grid`` x ``grid`` binary grid (cells kept with probability ``p``) upsampled
    bilinearly to (grid + 1) x cell size and cropped at a random shift below one cell (Petsiuk et al.
    2018, section 3.2). Only the small grids and shifts are stored.
    """

    def __init__(self, n: int, size: tuple[int, int], grid: int = 7, p: float = 0.5, seed: int = 0) -> None:
        if n < 1 or grid < 1 or not 0 < p <= 1:
            raise ValueError(f"RISE needs n_masks >= 1, grid >= 1 and 0 < p <= 1; got {n}, {grid}, {p}")
        self.n, self.size, self.grid, self.p = n, tuple(size), grid, p
        gen = torch.Generator().manual_seed(seed_for(seed, 0))
        self.cells = torch.rand(n, grid, grid, generator=gen) < p
        h, w = self.size
        self.cell = (-(-h // grid), -(-w // grid))
        self.shift_y = torch.randint(0, self.cell[0], (n,), generator=gen)
        self.shift_x = torch.randint(0, self.cell[1], (n,), generator=gen)

    def __len__(self) -> int:
        return self.n

    def __call__(self, which: torch.Tensor, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return masks number ``which`` as an (n, H, W) tensor in [0, 1]."""
        which = which.cpu()
        h, w = self.size
        up = ((self.grid + 1) * self.cell[0], (self.grid + 1) * self.cell[1])
        cells = self.cells[which].to(device=device, dtype=dtype)[:, None]
        big = F.interpolate(cells, size=up, mode="bilinear", align_corners=False)[:, 0]
        rows = (self.shift_y[which][:, None] + torch.arange(h)).to(device)
        cols = (self.shift_x[which][:, None] + torch.arange(w)).to(device)
        n = torch.arange(len(which), device=device)
        return big[n[:, None, None], rows[:, :, None], cols[:, None, :]].clamp_(0, 1)


def rise(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_masks: int = 4000, grid: int = 7,
         p: float = 0.5, baseline: float | torch.Tensor = 0.0, score: str = "softmax", seed: int = 0,
         batch_size: int = 64) -> Explanation:
    """RISE (Petsiuk et al. 2018): the sum of random masks weighted by the target score of the masked image,
    divided by n_masks x p.

    Masked images are x * M + baseline * (1 - M). ``score``: "softmax" (the paper: class probability)
    or "logit"; a callable target defines its own. The same ``n_masks`` masks (fixed by ``seed``) are
    used for every image, so an image's map does not depend on the rest of the batch.
    """
    x = check_inputs(model, inputs)
    b, _, h, w = x.shape
    masks = RiseMasks(n_masks, (h, w), grid, p, seed)
    base = as_baseline(baseline, x)

    def rows_fn(m: torch.Tensor, i: torch.Tensor):
        uniq, inv = torch.unique(m, return_inverse=True)
        mk = masks(uniq, x.device, x.dtype)[inv][:, None]
        return x[i] * mk + base[i] * (1 - mk), mk[:, 0]

    idx, out = clean_pass(model, x, target, batch_size)
    total = torch.zeros(b, h, w, dtype=x.dtype, device=x.device)
    _run_perturbed(model, x, rows_fn, n_masks * b, target, idx, score, batch_size, "masked inputs",
                   lambda i, s, mk: total.index_add_(0, i, s.to(x.dtype)[:, None, None] * mk))
    return Explanation(maps=total / (n_masks * p), method="rise", target=idx,
                       scores=row_scores(out, target, idx, score), extras={"n_masks": n_masks, "grid": grid, "p": p, "score": score})
