"""Surrogate-model attributions on feature masks: LIME (Ribeiro et al. 2016) and KernelSHAP (Lundberg & Lee 2017).

Both score random coalitions of features (a feature is kept from the image or replaced by the baseline), weight
them and fit a linear model of the target score on the binary coalition vectors, one per image; the coefficients
are the attributions. The coalitions of all images go through the model together, ``batch_size`` rows per
call; coalition s of an image with F features is drawn from its own stream of ``seed`` (the same for every image
with F features, whatever the batch or chunking), or given (``coalitions``). The fits are scikit-learn's
(Lasso for LIME, weighted least squares for KernelSHAP), in float64. Maps are (B, C, H, W), each input value
carrying its feature's coefficient; ``extras["feature_values"]`` holds the (B, F) coefficients.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from interpretorch.attribution.common import as_baseline, clean_pass, method_inputs, row_scores
from interpretorch.attribution.folded import forward_only_model
from interpretorch.core.progress import advance
from interpretorch.core.seeding import seed_for
from interpretorch.attribution.features import feature_masks, n_features
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.attribution.registry import register
from interpretorch.attribution.shapley import perturbed_scores, spread_features
from interpretorch.explanation import Explanation
from interpretorch.core.targets import Target, tensor_outputs

INF_WEIGHT = 1e6  # KernelSHAP's weight of the all-in and all-out coalitions (Captum's), standing in for infinity


def lime_coalitions(n: int, f: int, seed: int = 0) -> torch.Tensor:
    """LIME's coalitions for an image with ``f`` features: (n, f) in {0, 1}, each feature kept with probability 1/2
    (coalition s from its own stream of ``seed``)."""
    out = torch.empty(n, f, dtype=torch.long)
    for s in range(n):
        gen = torch.Generator().manual_seed(seed_for(seed, s, f))
        out[s] = torch.bernoulli(torch.full((f,), 0.5, dtype=torch.float64), generator=gen).long()
    return out


def kernel_shap_coalitions(n: int, f: int, seed: int = 0) -> torch.Tensor:
    """KernelSHAP's coalitions for ``f`` features: all features, none, then coalitions whose size k is drawn with
    probability proportional to (f - 1) / (k (f - k)) and whose members are uniform given k (so the Shapley kernel
    is in the sampling and every sampled coalition weighs 1): (n, f) in {0, 1}."""
    out = torch.zeros(n, f, dtype=torch.long)
    out[0] = 1
    if f < 2:
        return out
    k = torch.arange(1, f, dtype=torch.float64)
    p = (f - 1) / (k * (f - k))
    p /= p.sum()
    for s in range(2, n):
        gen = torch.Generator().manual_seed(seed_for(seed, s, f))
        size = int(torch.multinomial(p, 1, generator=gen)) + 1
        out[s, torch.randperm(f, generator=gen)[:size]] = 1
    return out


def _coalitions(nf: torch.Tensor, n: int, given, seed: int, draw) -> list[torch.Tensor]:
    """Per image its (n, F_i) coalitions: drawn by ``draw(n, F, seed)``, or ``given`` as (n, F) for all images or
    (B, n, F) per image."""
    b = len(nf)
    if given is None:
        if n < 1:
            raise ValueError(f"n_samples must be >= 1, got {n}")
        cache = {f: draw(n, f, seed) for f in set(nf.tolist())}
        return [cache[int(f)] for f in nf]
    z = torch.as_tensor(given).long().cpu()
    if z.dim() == 2:
        z = z[None].expand(b, -1, -1)
    if z.dim() != 3 or z.shape[0] != b or not bool((nf.cpu() == z.shape[2]).all()) or z.shape[1] < 1:
        raise ValueError(f"coalitions must have shape (n, F) or ({b}, n, F) with F the number of features of every "
                         f"image ({sorted(set(nf.tolist()))}), got {tuple(torch.as_tensor(given).shape)}")
    if not bool(((z == 0) | (z == 1)).all()):
        raise ValueError("coalitions must hold 0 (feature replaced by the baseline) or 1 (kept)")
    return list(z)


def _surrogate(model: nn.Module, inputs: torch.Tensor, target: Target, *, method: str, features, n_samples: int,
               baseline, score: str, seed: int, coalitions, n_segments: int, cell, batch_size: int | None,
               draw, weigh, fit) -> Explanation:
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    model = forward_only_model(model, x)  # no gradients: folded BatchNorms, in-place activations (CPU)
    b = x.shape[0]
    fm = feature_masks(x, features, n_segments=n_segments, cell=cell)
    nf = n_features(fm, b)
    fm = fm.expand(b, -1, -1, -1)
    zs = _coalitions(nf, n_samples, coalitions, seed, draw)
    counts = torch.tensor([len(z) for z in zs])
    fmax = int(nf.max())
    z_all = torch.zeros(int(counts.sum()), fmax, dtype=torch.long)
    start = 0
    for z in zs:
        z_all[start:start + len(z), :z.shape[1]] = z
        start += len(z)
    z_all = z_all.to(x.device)
    img = torch.repeat_interleave(torch.arange(b), counts).to(x.device)
    base = as_baseline(baseline, x)
    flat = fm.reshape(b, -1)
    layout = row_layout(model, x)

    # Rows that are the same input run once: a coalition matters only on the features that differ from the
    # baseline, and one keeping all of those is the image itself, which the clean pass scores (KernelSHAP's
    # all-in coalition; KernelSHAP draws many small and large coalitions twice: 9 % of 500 at 50 features).
    changed = torch.zeros(b, fmax, dtype=torch.float64, device=x.device)
    changed.scatter_add_(1, fm.expand_as(x).reshape(b, -1), (x != base).reshape(b, -1).double())
    changed = (changed > 0)[img]
    kept = z_all.bool() & changed
    whole = (kept == changed).all(1)
    uniq, inv = torch.unique(torch.cat([img[:, None], kept.long()], 1)[~whole], dim=0, return_inverse=True)
    u_img, u_keep = uniq[:, 0], uniq[:, 1:]

    def make_rows(r: torch.Tensor) -> torch.Tensor:
        i = u_img[r]
        keep = torch.gather(u_keep[r], 1, flat[i]).reshape((len(r),) + tuple(fm.shape[1:])).bool()
        return in_layout(torch.where(keep, x[i], base[i]), layout)

    idx, out = clean_pass(model, x, target, batch_size)
    sc = torch.empty(len(img), dtype=torch.float64, device=x.device)
    sc[~whole] = perturbed_scores(model, x, target, idx, score, batch_size, len(uniq), make_rows,
                                  lambda r: u_img[r], f"{method} coalitions")[inv]
    sc[whole] = row_scores(out, target, idx, score).double()[img[whole]]
    advance(len(img) - len(uniq))  # the rows not run again count as done on the progress sink
    phi = torch.zeros(b, fmax, dtype=torch.float64)
    intercept = torch.zeros(b, dtype=torch.float64)
    start = 0
    for i, z in enumerate(zs):
        rows = torch.arange(start, start + len(z))
        start += len(z)
        w = weigh(x[i], base[i], fm[i], z)
        coef, c0 = fit(z.double().numpy(), sc[rows.to(x.device)].cpu().numpy(), w)
        phi[i, :z.shape[1]] = torch.from_numpy(np.asarray(coef, dtype=np.float64))
        intercept[i] = float(c0)
    phi = phi.to(x.device)
    return Explanation(maps=spread_features(phi, fm, x), method=method, target=idx,
                       scores=row_scores(out, target, idx, score),
                       extras={"feature_values": phi.to(x.dtype), "intercept": intercept.to(x.dtype),
                               "n_features": nf, "feature_masks": fm, "n_samples": counts, "score": score,
                               "forward_passes": len(uniq), "reused_rows": len(img) - len(uniq)},
                       outputs=tensor_outputs(out))


def lime(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, features: str | torch.Tensor = "slic",
         n_samples: int = 500, baseline: float | torch.Tensor = 0.0, alpha: float = 0.01, kernel_width: float = 1.0,
         distance: str = "cosine", score: str = "logit", seed: int = 0, coalitions: torch.Tensor | None = None,
         n_segments: int = 50, cell: int | tuple[int, int] | None = None,
         batch_size: int | None = None) -> Explanation:
    """LIME (Ribeiro et al. 2016): the coefficients of a Lasso (``alpha``) fit of the target score on random
    coalitions of superpixels, each weighted by exp(-d^2 / (2 kernel_width^2)) with d the ``distance``
    ("cosine" or "euclidean") between the image and its perturbed copy (Captum's Lime defaults).

    ``features``: "slic" (``n_segments`` superpixels per image), "grid" (``cell`` pixel squares) or label masks;
    dropped features take the ``baseline``. ``n_samples`` coalitions per image (Captum 50, the lime library 1000),
    each feature kept with probability 1/2; ``coalitions`` ((n, F) or (B, n, F) in {0, 1}) gives them. A row is
    one coalition of one image; a coalition giving the same input as another of its image, or the image itself,
    is not run again (``extras["reused_rows"]``).
    """
    if distance not in ("cosine", "euclidean"):
        raise ValueError(f"distance must be 'cosine' or 'euclidean', got {distance!r}")
    if not kernel_width > 0:
        raise ValueError(f"kernel_width must be > 0, got {kernel_width}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")

    def weigh(xi: torch.Tensor, bi: torch.Tensor, fi: torch.Tensor, z: torch.Tensor) -> np.ndarray:
        # per-feature sums of x.x, x.b, b.b and (x - b)^2 give every perturbed copy's distance without building it
        f = z.shape[1]
        xv, bv, lab = xi.reshape(-1).double(), bi.reshape(-1).double(), fi.expand_as(xi).reshape(-1)

        def per_feature(v: torch.Tensor) -> torch.Tensor:
            return torch.zeros(f, dtype=torch.float64, device=v.device).index_add_(0, lab, v).cpu()
        sxx, sxb, sbb, sdd = (per_feature(v) for v in (xv * xv, xv * bv, bv * bv, (xv - bv) ** 2))
        zd, off = z.double(), 1 - z.double()
        if distance == "cosine":
            dot = zd @ sxx + off @ sxb
            norm_p = (zd @ sxx + off @ sbb).clamp_min(0).sqrt()
            cos = dot / (sxx.sum().sqrt() * norm_p).clamp_min(1e-8)
            d = 1 - cos
        else:
            d = (off @ sdd).clamp_min(0).sqrt()
        return torch.exp(-d.square() / (2 * kernel_width ** 2)).numpy()

    def fit(z: np.ndarray, y: np.ndarray, w: np.ndarray):
        from sklearn.linear_model import Lasso, LinearRegression

        model_ = LinearRegression() if alpha == 0 else Lasso(alpha=alpha)
        model_.fit(z, y, sample_weight=w)
        return model_.coef_, model_.intercept_

    return _surrogate(model, inputs, target, method="lime", features=features, n_samples=n_samples,
                      baseline=baseline, score=score, seed=seed, coalitions=coalitions, n_segments=n_segments,
                      cell=cell, batch_size=batch_size, draw=lime_coalitions, weigh=weigh, fit=fit)


register("lime", lime, kind="pixel",
         doc="LIME (Ribeiro et al. 2016) on SLIC superpixels, Lasso fit, Captum's kernel; a row is one coalition")


def kernel_shap(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                features: str | torch.Tensor = "slic", n_samples: int = 500, baseline: float | torch.Tensor = 0.0,
                score: str = "logit", seed: int = 0, coalitions: torch.Tensor | None = None, n_segments: int = 50,
                cell: int | tuple[int, int] | None = None, batch_size: int | None = None) -> Explanation:
    """KernelSHAP (Lundberg & Lee 2017): SHAP values of superpixels as the weighted least-squares fit of the
    target score on coalitions drawn from the Shapley kernel; the all-in and all-out coalitions weigh 1e6, so
    the values add up to f(x) - f(baseline) (``extras["efficiency_gap"]`` reports what is left).

    ``features``: "slic" (``n_segments`` superpixels per image), "grid" (``cell`` pixel squares) or label masks;
    dropped features take the ``baseline``. ``n_samples`` coalitions per image (Captum 50; the shap library
    2 F + 2048), the first two all-in and all-out; ``coalitions`` ((n, F) or (B, n, F)) gives them. A row is
    one coalition of one image; a coalition giving the same input as another of its image, or the image itself
    (the all-in one), is not run again (``extras["reused_rows"]``).
    """
    def weigh(xi, bi, fi, z: torch.Tensor) -> np.ndarray:
        k = z.sum(1)
        return np.where(((k == 0) | (k == z.shape[1])).numpy(), INF_WEIGHT, 1.0)

    def fit(z: np.ndarray, y: np.ndarray, w: np.ndarray):
        from sklearn.linear_model import LinearRegression

        model_ = LinearRegression().fit(z, y, sample_weight=w)
        return model_.coef_, model_.intercept_

    e = _surrogate(model, inputs, target, method="kernel_shap", features=features, n_samples=n_samples,
                   baseline=baseline, score=score, seed=seed, coalitions=coalitions, n_segments=n_segments,
                   cell=cell, batch_size=batch_size, draw=kernel_shap_coalitions, weigh=weigh, fit=fit)
    # f(baseline) is the intercept when the all-out coalition is among the samples
    e.extras["efficiency_gap"] = (e.extras["feature_values"].sum(1) + e.extras["intercept"].to(e.scores.device)
                                  - e.scores)
    return e


register("kernel_shap", kernel_shap, kind="pixel", aliases=("kernelshap",),
         doc="KernelSHAP (Lundberg & Lee 2017) on SLIC superpixels, Shapley-kernel sampling; a row is one "
             "coalition")

