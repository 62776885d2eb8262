"""Perturbation attributions: Occlusion (Zeiler & Fergus 2014) and RISE (Petsiuk et al. 2018).

Both only run the model forward, on perturbed copies of the images. The copies of all images go
through the model together, ``batch_size`` rows at a time, and are built on the model's device
chunk by chunk (never all at once). Maps are (B, H, W).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import as_baseline, clean_pass, method_inputs, row_scores, score_rows
from interpretorch.attribution.folded import forward_only_rows
from interpretorch.attribution.incremental import incremental_rows
from interpretorch.attribution.layout import in_layout
from interpretorch.attribution.registry import register
from interpretorch.core import seed_for
from interpretorch.core.batching import group_steps
from interpretorch.core.targets import Target, check_finite, target_scores, tensor_outputs
from interpretorch.explanation import Explanation


def _pair(v: int | tuple[int, int], what: str) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or not all(isinstance(k, int) and k >= 1 for k in t):
        raise ValueError(f"{what} must be a positive int or a pair of positive ints, got {v!r}")
    return t  # type: ignore[return-value]


def _starts(size: int, window: int, stride: int) -> torch.Tensor:
    """Window origins along one axis: 0, stride, ... until the image is covered (the last window may be cut off
    by the border, as in Captum)."""
    return torch.arange(-(-(size - window) // stride) + 1) * stride


def _rows_model(model: nn.Module, x: torch.Tensor, clean: object) -> tuple[Callable, nn.Module]:
    """The function the perturbed rows run on and the network it belongs to: ``forward_only_model`` (no gradients;
    on the CPU folded BatchNorms, in-place activations and channels-last rows, the same function) where the clean
    pass gave one tensor, else the model itself."""
    if not isinstance(clean, torch.Tensor):
        return model, model
    net, layout = forward_only_rows(model, x)
    return (net if layout == torch.contiguous_format else lambda rows: net(in_layout(rows, layout))), net


def _run_perturbed(model: tuple[Callable, nn.Module], x: torch.Tensor, rows_fn, n_rows: int, target: Target,
                   idx: torch.Tensor | None, score: str, batch_size: int, what: str, accumulate) -> None:
    """Score ``n_rows`` perturbation-major rows (row r = perturbation r // B of image r % B) built by
    ``rows_fn(perturbation, image)`` and hand each chunk's (images, scores, extra) to ``accumulate``."""
    b = x.shape[0]
    score_rows(model[0], n_rows, lambda r: rows_fn(r // b, r % b), image_of=lambda r: r % b, device=x.device,
               target=target, idx=idx, score=score, batch_size=batch_size, consume=accumulate, what=what,
               frozen_model=model[1])


def _snake(ny: int, nx: int) -> list[int]:
    """Window numbers (row-major) in boustrophedon order: each window next to the one before."""
    return [r * nx + (c if r % 2 == 0 else nx - 1 - c) for r in range(ny) for c in range(nx)]


def _occlude_in_place(model: nn.Module, x: torch.Tensor, out: object, base: torch.Tensor,
                      window: Callable[[torch.Tensor], torch.Tensor], order: list[int], target: Target,
                      idx: torch.Tensor | None, score: str, clean: torch.Tensor, batch_size: int,
                      total: torch.Tensor) -> bool:
    """Occlusion's rows on ``IncrementalRows``, adding each drop into ``total``; False (``total`` untouched) where
    the model cannot run rows so.

    ``order`` is cut into ``chains`` consecutive runs per image, so that a step holds ``batch_size`` rows even for
    one image; a sequence (image, chain) starts from the clean image and then steps through its windows, each row
    differing from the one before only in the window it restores and the one it occludes, so each recomputes the
    maps only around the two. A chain shorter than the others repeats its last window (an unchanged row, not
    counted)."""
    if not isinstance(out, torch.Tensor):
        return False
    b, n = x.shape[0], len(order)
    probe = incremental_rows(model, x[:1])  # the trace the check made; kept maps are counted per image
    if probe is None:
        return False
    size = max(1, min(batch_size, probe.rows_within()))
    chains = max(1, min(n, size // b))
    length = -(-n // chains)
    seq_img = torch.arange(b, device=x.device).repeat_interleave(chains)  # sequence -> image
    seq_chain = torch.arange(chains).repeat(b)
    n_seq = b * chains
    # every group's batch size traced before any row runs, so a refusal leaves nothing half done
    if n_seq % size and incremental_rows(model, x[:1].expand(n_seq % size, *x.shape[1:])) is None:
        return False
    order_t = torch.tensor(order, device=x.device)
    run = None
    with torch.no_grad():
        # a step's rows count on the progress sink where they are windows, not a finished chain's repeats
        for sl, k in group_steps(n_seq, size, length, lambda g, k: int((seq_chain[g] * length + k < n).sum())):
            img = seq_img[sl]
            if k == 0:
                run = incremental_rows(model, x[img])
                check_finite(run.start(x[img]), "outputs on the clean inputs")
            pos = seq_chain[sl] * length + k
            real = pos < n  # a chain past its end repeats its last window
            mask = window(order_t[pos.clamp(max=n - 1).to(x.device)])  # (rows, H, W)
            o = run.step(torch.where(mask[:, None], base[img], x[img]))
            check_finite(o, "outputs on occluded inputs")
            s = target_scores(o, target, None if idx is None else idx[img], score)
            drop = (clean[img] - s).to(x.dtype)[:, None, None] * mask
            total.index_add_(0, img[real.to(img.device)], drop[real.to(drop.device)])
    return True


def occlusion(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
              window: int | tuple[int, int] | None = None, stride: int | tuple[int, int] | None = None,
              baseline: float | torch.Tensor = 0.0, score: str = "logit",
              batch_size: int | None = None) -> Explanation:
    """Occlusion (Zeiler & Fergus 2014): the drop of the target score when a window is set to ``baseline``,
    averaged over the windows covering each pixel.

    Windows cover all channels and slide by ``stride`` from the top-left corner until the image is
    covered (the last one may be cut off by the border), as Captum's ``Occlusion`` with a
    (C, h, w) window. ``score``: "logit" (Captum) or "softmax" (the class probability); a callable
    target defines its own score. ``baseline``: a number or a tensor broadcastable to the inputs.
    The default window is 1/7 of the shorter image side (32 px at 224 px, about the cell of RISE's 7 x 7
    grid) and the default stride half the window: 169 windows per 224 px image, 2.4 s per image on a
    2-core CPU for EfficientNet-Lite0 at the default of 8 rows per pass there (64 on a GPU). Each image
    costs one forward pass per window (``extras["forward_passes"]``); where ``IncrementalRows`` can run the
    model (CPU, traceable, no hooks), the windows go in boustrophedon order and each row recomputes the
    feature maps only around the window it restores and the one it occludes.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    b, _, h, w = x.shape
    if window is None:
        window = max(1, min(h, w) // 7)
    if stride is None:
        stride = tuple(max(1, k // 2) for k in _pair(window, "window"))
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

    def window(p: torch.Tensor) -> torch.Tensor:
        return in_y[p // nx][:, :, None] & in_x[p % nx][:, None, :]  # (n, H, W)

    if not _occlude_in_place(model, x, out, base, window, _snake(len(ys), nx), target, idx, score, clean,
                             batch_size, total):
        model = _rows_model(model, x, out)
        _run_perturbed(model, x, rows_fn, len(ys) * nx * b, target, idx, score, batch_size, "occluded inputs",
                       lambda i, s, mask: total.index_add_(0, i, (clean[i] - s).to(x.dtype)[:, None, None] * mask))
    return Explanation(maps=total / count, method="occlusion", target=idx, scores=clean,
                       extras={"window": (kh, kw), "stride": (sh, sw), "score": score,
                               "forward_passes": len(ys) * nx * b}, outputs=tensor_outputs(out))


register("occlusion", occlusion, kind="region", aliases=("occ",))


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


def _as_masks(masks: "RiseMasks | torch.Tensor", size: tuple[int, int]) -> "RiseMasks | torch.Tensor":
    """Validate masks given to ``rise``: a ``RiseMasks`` for (H, W) images or an (N, H, W) / (N, 1, H, W) tensor."""
    if isinstance(masks, RiseMasks):
        if masks.size != tuple(size):
            raise ValueError(f"the RISE masks are for {masks.size} images, the inputs are {tuple(size)}")
        return masks
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be RiseMasks or a tensor (N, H, W), got {type(masks).__name__}")
    m = masks.detach()
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.dim() != 3 or tuple(m.shape[1:]) != tuple(size) or m.shape[0] == 0:
        raise ValueError(f"masks must have shape (N, {size[0]}, {size[1]}) or (N, 1, {size[0]}, {size[1]}) "
                         f"for inputs of size {tuple(size)}, got {tuple(masks.shape)}")
    if not m.is_floating_point():
        m = m.float()
    if not torch.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise ValueError("masks must hold values in [0, 1]")
    return m


def rise(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, n_masks: int = 1000, grid: int = 7,
         p: float = 0.5, baseline: float | torch.Tensor = 0.0, score: str = "softmax", seed: int = 0,
         masks: "RiseMasks | torch.Tensor | None" = None, batch_size: int | None = None) -> Explanation:
    """RISE (Petsiuk et al. 2018): the sum of random masks weighted by the target score of the masked image,
    divided by N x E[M] (N masks, E[M] = p for generated masks).

    Masked images are x * M + baseline * (1 - M). ``score``: "softmax" (the paper: class probability)
    or "logit"; a callable target defines its own. The ``n_masks`` masks (``grid`` x ``grid`` cells kept
    with probability ``p``, fixed by ``seed``) are generated once and used for every image, so an image's
    map does not depend on the rest of the batch; ``extras["masks"]`` returns them for reuse. ``masks``
    takes such a ``RiseMasks``, or a tensor (N, H, W) of masks in [0, 1], in which case E[M] is their mean.
    Each image costs one forward pass per mask (``extras["forward_passes"]``). The default of 1000 masks keeps
    a 224 px image at about 14 s on a 2-core CPU for EfficientNet-Lite0 (8 rows per pass, 64 on a GPU); the
    paper used 4000-8000, and the map's noise falls as 1 / sqrt(n_masks), so raise it for figures.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    b, _, h, w = x.shape
    if masks is None:
        masks = RiseMasks(n_masks, (h, w), grid, p, seed)
    masks = _as_masks(masks, (h, w))
    if isinstance(masks, RiseMasks):
        n, mean_mask = len(masks), masks.p

        def render(which: torch.Tensor) -> torch.Tensor:
            return masks(which, x.device, x.dtype)
    else:
        n, mean_mask = masks.shape[0], float(masks.double().mean())
        if mean_mask == 0:
            raise ValueError("the given masks are all zero")

        def render(which: torch.Tensor) -> torch.Tensor:
            return masks[which.to(masks.device)].to(device=x.device, dtype=x.dtype)
    base = as_baseline(baseline, x)

    def rows_fn(m: torch.Tensor, i: torch.Tensor):
        uniq, inv = torch.unique(m, return_inverse=True)
        mk = render(uniq)[inv][:, None]
        return x[i] * mk + base[i] * (1 - mk), mk[:, 0]

    idx, out = clean_pass(model, x, target, batch_size)
    model = _rows_model(model, x, out)
    total = torch.zeros(b, h, w, dtype=x.dtype, device=x.device)
    _run_perturbed(model, x, rows_fn, n * b, target, idx, score, batch_size, "masked inputs",
                   lambda i, s, mk: total.index_add_(0, i, s.to(x.dtype)[:, None, None] * mk))
    extras = {"n_masks": n, "p": mean_mask, "score": score, "masks": masks,
              "grid": masks.grid if isinstance(masks, RiseMasks) else None, "forward_passes": n * b}
    return Explanation(maps=total / (n * mean_mask), method="rise", target=idx,
                       scores=row_scores(out, target, idx, score), extras=extras, outputs=tensor_outputs(out))


register("rise", rise, kind="region")
