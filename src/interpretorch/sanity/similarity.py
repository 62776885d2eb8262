"""How similar two explanation maps are, with the normalisations of Adebayo et al. 2018, and two baselines.

Every function takes two batches of maps of the same shape - pixel (B, C, H, W), region (B, H, W) or token
(B, T) - and returns one value per image, (B,) float64, on the CPU. The normalisation each metric applies first
is the one of the paper's code (github.com/adebayoj/sanity_checks_saliency, notebook
``inceptionv3_cascading_randomization``); its docstring says which. Rank correlations are computed in torch on
the whole batch (average ranks for ties, like ``scipy.stats.spearmanr``); SSIM and HOG come from scikit-image.

A constant map has no rank order: its rank correlations are NaN, as scipy's.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from interpretorch.explanation import abs_grayscale, diverging

METRICS = ("spearman_abs", "spearman", "ssim", "hog", "topk")
HOG_CORRELATIONS = ("pearson", "spearman")
SSIM_MIN_SIDE = 11


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError("maps must be torch tensors")
    if a.shape != b.shape:
        raise ValueError(f"maps to compare have different shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2 or a.shape[0] == 0:
        raise ValueError(f"maps must be a non-empty batch (B, ...), got shape {tuple(a.shape)}")
    for t in (a, b):
        if not torch.isfinite(t).all():
            raise ValueError("maps contain NaN or infinite values")


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1..N) of each row of a (B, N) tensor, ties getting their average rank (as scipy.stats.rankdata).

    One sort per row; each run of equal sorted values gets the mean of its first and last position."""
    s, order = x.contiguous().sort(dim=1)
    b, n = s.shape
    pos = torch.arange(n, device=s.device).expand(b, n)
    first = torch.ones_like(s, dtype=torch.bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    last = torch.ones_like(s, dtype=torch.bool)
    last[:, :-1] = first[:, 1:]
    start = torch.cummax(torch.where(first, pos, torch.zeros_like(pos)), dim=1).values
    end = torch.cummin(torch.where(last, pos, torch.full_like(pos, n - 1)).flip(1), dim=1).values.flip(1)
    avg = (start + end).to(torch.float64) / 2.0 + 1.0
    return torch.empty_like(avg).scatter_(1, order, avg)


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair of two (B, N) tensors; NaN where a row is constant."""
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    den = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / den
    return torch.where(den > 0, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))


def spearman_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each row pair of two (B, N) tensors (Pearson of average ranks)."""
    return pearson_rows(average_ranks(a), average_ranks(b))


def _flat(m: torch.Tensor) -> torch.Tensor:
    return m.detach().reshape(m.shape[0], -1).cpu()


def _is_image(m: torch.Tensor) -> bool:
    return m.dim() in (3, 4)


def spearman_abs(a: torch.Tensor, b: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Spearman rank correlation of the absolute maps.

    Normalisation (the paper's ``abs_grayscale_norm``): the sum over channels of |map|, scaled per image from its
    minimum to its 99th percentile and clipped there (so the top 1 % of pixels tie); token maps use |map|.
    """
    _check_pair(a, b)
    if _is_image(a):
        if percentile >= 100:  # no clipping: the view is an increasing affine map of the |map|, ranks alike
            return spearman_rows(_flat(_abs_sum(a)), _flat(_abs_sum(b)))
        return spearman_rows(_flat(abs_grayscale(a, percentile)), _flat(abs_grayscale(b, percentile)))
    return spearman_rows(_flat(a).abs(), _flat(b).abs())


def _abs_sum(m: torch.Tensor) -> torch.Tensor:
    a = m.detach().abs()
    return a.sum(1) if a.dim() == 4 else a


def spearman(a: torch.Tensor, b: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Spearman rank correlation of the signed maps.

    Normalisation (the paper's ``diverging_norm``): the signed sum over channels divided by the 99th percentile of
    its absolute value and clipped to [-1, 1]; token maps are used as they are.
    """
    _check_pair(a, b)
    if _is_image(a):
        return spearman_rows(_flat(diverging(a, percentile)), _flat(diverging(b, percentile)))
    return spearman_rows(_flat(a), _flat(b))


def minmax(m: torch.Tensor) -> torch.Tensor:
    """Scale each map of a batch (all its channels together) to [0, 1]; a constant map becomes 0."""
    f = m.detach().reshape(m.shape[0], -1).to(torch.float64)
    lo, hi = f.amin(1, keepdim=True), f.amax(1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (f - lo) / span.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(f))
    return out.reshape(m.shape)


def _as_hwc(m: torch.Tensor) -> tuple[np.ndarray, int | None]:
    """(B, C, H, W) -> (B, H, W, C) numpy with channel axis -1, (B, H, W) -> itself with no channel axis."""
    if m.dim() == 4:
        return m.permute(0, 2, 3, 1).cpu().numpy(), -1
    return m.cpu().numpy(), None


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity (scikit-image, Gaussian weights) of the maps min-max scaled to [0, 1].

    Normalisation (the paper's ``normalize_image``): each map, all channels together, scaled to [0, 1]; pixel
    maps keep their channels (mean SSIM over channels). ``data_range`` 1 is the range of the scaled maps (the
    paper's ``compare_ssim`` of scikit-image 0.14 inferred 2, the range of the float dtype, which raises the
    stabilising constants; pass ``data_range=2`` for its numbers). Maps under 11 px a side (the Gaussian window)
    get NaN.
    """
    from skimage.metrics import structural_similarity

    _check_pair(a, b)
    if not _is_image(a):
        raise ValueError(f"SSIM needs image maps (B, H, W) or (B, C, H, W), got shape {tuple(a.shape)}")
    if min(a.shape[-2:]) < SSIM_MIN_SIDE:  # the Gaussian window (sigma 1.5, 11 px) does not fit
        return torch.full((a.shape[0],), float("nan"), dtype=torch.float64)
    x, ch = _as_hwc(minmax(a))
    y, _ = _as_hwc(minmax(b))
    vals = [structural_similarity(x[i], y[i], gaussian_weights=True, data_range=data_range, channel_axis=ch)
            for i in range(x.shape[0])]
    return torch.tensor(vals, dtype=torch.float64)


def hog_features(m: torch.Tensor, pixels_per_cell: int = 16) -> torch.Tensor:
    """HOG descriptors (scikit-image, 9 orientations, 3x3-cell blocks) of each min-max scaled map, (B, F)."""
    from skimage.feature import hog

    x, ch = _as_hwc(minmax(m))
    feats = [hog(x[i], pixels_per_cell=(pixels_per_cell, pixels_per_cell), channel_axis=ch)
             for i in range(x.shape[0])]
    return torch.from_numpy(np.stack(feats))


def hog(a: torch.Tensor, b: torch.Tensor, pixels_per_cell: int = 16, correlation: str = "pearson") -> torch.Tensor:
    """Correlation of the HOG features of the two maps (each min-max scaled to [0, 1] first, as the paper did).

    The paper's text calls it the Pearson correlation of the histograms of gradients (the default); its notebook
    computes a Spearman rank correlation of them (``correlation="spearman"``). 16 px cells as in its code; maps
    smaller than 3 cells a side use cells of a third of their shorter side.
    """
    if correlation not in HOG_CORRELATIONS:
        raise ValueError(f"unknown HOG correlation {correlation!r}; choose one of {HOG_CORRELATIONS}")
    _check_pair(a, b)
    if not _is_image(a):
        raise ValueError(f"HOG needs image maps (B, H, W) or (B, C, H, W), got shape {tuple(a.shape)}")
    ppc = min(pixels_per_cell, max(1, min(a.shape[-2:]) // 3))
    fa, fb = hog_features(a, ppc), hog_features(b, ppc)
    return pearson_rows(fa, fb) if correlation == "pearson" else spearman_rows(fa, fb)


def topk(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.05) -> torch.Tensor:
    """Fraction of the ``fraction`` most important pixels of ``a`` that are also among those of ``b``.

    Importance is the sum over channels of |map| (the paper's abs-grayscale view before clipping; top-k is not in
    the paper, whose views leave the order of pixels unchanged, so no further normalisation is needed). Ties at
    the k-th value are broken as ``torch.topk`` breaks them.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    _check_pair(a, b)
    fa = _flat(a.abs().sum(1) if a.dim() == 4 else a.abs())
    fb = _flat(b.abs().sum(1) if b.dim() == 4 else b.abs())
    k = max(1, int(round(fraction * fa.shape[1])))
    ia = torch.zeros(fa.shape, dtype=torch.bool, device=fa.device).scatter_(1, fa.topk(k, dim=1).indices, True)
    ib = torch.zeros(fb.shape, dtype=torch.bool, device=fb.device).scatter_(1, fb.topk(k, dim=1).indices, True)
    return (ia & ib).sum(1).to(torch.float64) / k  # boolean masks: (B, N), not a (B, k, N) one-hot


METRIC_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "spearman_abs": spearman_abs, "spearman": spearman, "ssim": ssim, "hog": hog, "topk": topk}


def compare(a: torch.Tensor, b: torch.Tensor, metrics: tuple[str, ...] | list[str] = METRICS,
            options: dict[str, dict] | None = None) -> dict[str, torch.Tensor]:
    """Every requested metric of two batches of maps, {metric: (B,)}; SSIM and HOG are NaN for token maps."""
    unknown = [m for m in metrics if m not in METRIC_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown similarity metric(s) {unknown}; choose from {METRICS}")
    options = options or {}
    out = {}
    for m in metrics:
        if m in ("ssim", "hog") and not _is_image(a):
            out[m] = torch.full((a.shape[0],), float("nan"), dtype=torch.float64)
            continue
        out[m] = METRIC_FUNCTIONS[m](a, b, **options.get(m, {}))
    return out


def _rank_view(metric: str, m: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """The (B, N) rows ``metric`` (spearman_abs / spearman) ranks, after its normalisation."""
    if metric == "spearman_abs":
        if not _is_image(m):
            return _flat(m).abs()
        return _flat(_abs_sum(m)) if percentile >= 100 else _flat(abs_grayscale(m, percentile))
    return _flat(diverging(m, percentile)) if _is_image(m) else _flat(m)


class Reference:
    """Maps compared with many others (the original maps of a randomization test): the same values as ``compare``,
    with the rank correlations' normalisation and ranks of these maps computed once instead of per comparison."""

    def __init__(self, a: torch.Tensor, metrics: tuple[str, ...] | list[str] = METRICS,
                 options: dict[str, dict] | None = None) -> None:
        unknown = [m for m in metrics if m not in METRIC_FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown similarity metric(s) {unknown}; choose from {METRICS}")
        _check_pair(a, a)
        self.a, self.metrics, self.options = a, tuple(metrics), options or {}
        self.ranks = {m: average_ranks(_rank_view(m, a, **self.options.get(m, {})))
                      for m in self.metrics if m in ("spearman_abs", "spearman")}

    def compare(self, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every metric of the reference against ``b``, {metric: (B,)}, equal to ``compare(reference, b)``."""
        _check_pair(self.a, b)
        rest = [m for m in self.metrics if m not in self.ranks]
        out = compare(self.a, b, rest, self.options) if rest else {}
        for m, ra in self.ranks.items():
            out[m] = pearson_rows(ra, average_ranks(_rank_view(m, b, **self.options.get(m, {}))))
        return {m: out[m] for m in self.metrics}


def sobel_edges(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the channel mean of (B, C, H, W) images, (B, H, W) (reflected borders)."""
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    g = images.detach().to(torch.float64).mean(1, keepdim=True).cpu()
    kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=torch.float64) / 4.0
    k = torch.stack([kx, kx.T])[:, None]
    d = F.conv2d(F.pad(g, (1, 1, 1, 1), mode="reflect"), k)
    return d.pow(2).sum(1).sqrt()


def edge_map_like(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The Sobel edge map of ``images`` shaped as the maps ``like``: resized to their size, copied per channel."""
    e = sobel_edges(images)
    if not _is_image(like):
        raise ValueError(f"the edge baseline needs image maps, got shape {tuple(like.shape)}")
    size = tuple(like.shape[-2:])
    if tuple(e.shape[-2:]) != size:
        e = F.interpolate(e[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    if like.dim() == 4:
        e = e[:, None].expand(-1, like.shape[1], -1, -1)
    return e.to(torch.float32).contiguous()


def random_map_like(like: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A seeded map of i.i.d. standard normal values with the shape of ``like``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(tuple(like.shape), generator=g)


def baselines(original: torch.Tensor, images: torch.Tensor | None, metrics=METRICS, seed: int = 0,
              options: dict[str, dict] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """Calibration per image: {"random": {metric: (B,)}, "edge": ...} - the similarity of the original maps to a
    random map and to the Sobel edge map of the input (no edge baseline for token maps or without images)."""
    out = {"random": compare(original, random_map_like(original, seed), metrics, options)}
    if images is not None and _is_image(original):
        out["edge"] = compare(original, edge_map_like(images, original), metrics, options)
    return out
