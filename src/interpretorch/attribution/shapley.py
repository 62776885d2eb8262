"""Shapley-value and feature-removal attributions: GradientSHAP (Lundberg & Lee 2017), Shapley value sampling
(Castro et al. 2009; Strumbelj & Kononenko 2010), feature ablation and feature permutation (Breiman 2001;
Fisher et al. 2019) on feature masks.

``extras["feature_values"]`` holds the (B, F) value of each feature and ``extras["feature_masks"]`` the labels.

The feature-based methods work on features: sets of input values that move together (SLIC superpixels of each
image by default, a grid, or the user's masks; see ``features.feature_masks``). Their perturbed copies of all
images go through the model together, ``batch_size`` rows per call, and every random draw (a permutation, a
reference, a noise pattern) belongs to one sample number, so results do not depend on the chunking; an explicit
``permutations`` / ``samples`` option replays given draws (Captum's, in the tests). Maps are (B, C, H, W): each
input value carries its feature's attribution, as in Captum.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from interpretorch.attribution.common import as_baseline, clean_pass, method_inputs, row_scores, score_rows
from interpretorch.attribution.features import feature_masks, n_features
from interpretorch.attribution.folded import folded_model, forward_only_model
from interpretorch.attribution.gradient import input_grad
from interpretorch.attribution.integrated import ig_baseline
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.attribution.noise import unit_noise
from interpretorch.attribution.registry import register
from interpretorch.core.batching import chunks
from interpretorch.core.seeding import seed_for
from interpretorch.capture import capture
from interpretorch.explanation import Explanation
from interpretorch.core.targets import Target, check_finite, tensor_outputs


# ---------------------------------------------------------------------------------------------- GradientSHAP

def _references(x: torch.Tensor, baselines: torch.Tensor | None, blur_sigma: float) -> torch.Tensor:
    """(K, B or 1, C, H, W): a given (K, C, H, W) distribution shared by all images, or per image zeros and the
    blurred image."""
    if baselines is None:
        return torch.stack([torch.zeros_like(x), ig_baseline("blur", x, blur_sigma=blur_sigma)])
    if not isinstance(baselines, torch.Tensor):
        raise TypeError(f"baselines must be a tensor (K, C, H, W) of reference images, got "
                        f"{type(baselines).__name__}")
    if baselines.dim() != 4 or tuple(baselines.shape[1:]) != tuple(x.shape[1:]) or baselines.shape[0] < 1:
        raise ValueError(f"baselines must have shape (K, {', '.join(map(str, x.shape[1:]))}) with K >= 1, got "
                         f"{tuple(baselines.shape)}")
    if not torch.isfinite(baselines).all():
        raise ValueError("baselines contain NaN or infinite values")
    return baselines.detach().to(device=x.device, dtype=x.dtype)[:, None]


def _gradshap_samples(samples: dict | None, n: int, k: int, x: torch.Tensor, stdev: float, seed: int):
    """Per sample s and image i: the reference index, alpha and additive noise, as functions of (s, i) rows."""
    b = x.shape[0]
    if samples is None:
        if n < 1:
            raise ValueError(f"n_samples must be >= 1, got {n}")
        draws = []
        for s in range(n):
            gen = torch.Generator().manual_seed(seed_for(seed, s, 1))
            draws.append((int(torch.randint(k, (1,), generator=gen)), float(torch.rand(1, generator=gen,
                                                                                        dtype=torch.float64))))
        index = torch.tensor([d[0] for d in draws], device=x.device)[:, None].expand(n, b)
        alpha = torch.tensor([d[1] for d in draws], dtype=x.dtype, device=x.device)[:, None].expand(n, b)

        def noise(s: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
            if stdev == 0:
                return torch.zeros((len(s),) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
            uniq, inv = torch.unique(s, return_inverse=True)
            return stdev * unit_noise(uniq.tolist(), tuple(x.shape[1:]), seed, dtype=x.dtype, device=x.device)[inv]
        return n, index, alpha, noise
    if not isinstance(samples, dict) or not {"baseline_index", "alpha"} <= set(samples):
        raise ValueError("samples must be a dict with 'baseline_index' (n, B) and 'alpha' (n, B), and optionally "
                         "'noise' (n, B, C, H, W)")
    index = torch.as_tensor(samples["baseline_index"], device=x.device).long()
    alpha = torch.as_tensor(samples["alpha"], device=x.device).to(x.dtype)
    if index.dim() != 2 or index.shape[1] != b or alpha.shape != index.shape:
        raise ValueError(f"samples['baseline_index'] and samples['alpha'] must both have shape (n, {b}), got "
                         f"{tuple(index.shape)} and {tuple(alpha.shape)}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= k):
        raise ValueError(f"samples['baseline_index'] must index the {k} baselines")
    given = samples.get("noise")
    if given is not None:
        given = torch.as_tensor(given).to(device=x.device, dtype=x.dtype)
        if tuple(given.shape) != tuple(index.shape) + tuple(x.shape[1:]):
            raise ValueError(f"samples['noise'] must have shape {tuple(index.shape) + tuple(x.shape[1:])}, got "
                             f"{tuple(given.shape)}")

    def noise(s: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        if given is None:
            return torch.zeros((len(s),) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
        return given[s, i]
    return index.shape[0], index, alpha, noise


def gradient_shap(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                  baselines: torch.Tensor | None = None, n_samples: int = 50, stdev: float = 0.0, seed: int = 0,
                  samples: dict | None = None, blur_sigma: float = 10.0, batch_size: int | None = None
                  ) -> Explanation:
    """GradientSHAP (Lundberg & Lee 2017, the expected-gradients estimate of SHAP values): the mean over samples
    of (x + noise - x') times the gradient at x' + alpha (x + noise - x'), with the reference x' drawn from
    ``baselines`` and alpha uniform in [0, 1].

    ``baselines``: (K, C, H, W) references shared by all images (a background sample of the data); without
    them, two references per image: zeros and the image blurred by ``blur_sigma`` pixels. ``stdev``: Gaussian
    noise on the inputs (Captum's ``stdevs``, default 0). ``n_samples``: 50 (Captum 5, the shap library 200);
    sample s draws its reference, alpha and noise from its own stream of ``seed``, the same for every image.
    ``samples`` replays given draws: {"baseline_index": (n, B), "alpha": (n, B), "noise": (n, B, C, H, W)}.
    A row is one sample of one image (n x B rows, ``batch_size`` per model call).
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    model = folded_model(model, x)  # BatchNorms folded on the CPU: the same function, fewer passes
    b = x.shape[0]
    if stdev < 0:
        raise ValueError(f"stdev must be >= 0, got {stdev}")
    refs = _references(x, baselines, blur_sigma)
    n, index, alpha, noise = _gradshap_samples(samples, n_samples, refs.shape[0], x, stdev, seed)
    idx, out = clean_pass(model, x, target, batch_size)
    acc = torch.float64 if x.device.type != "mps" else x.dtype
    total = torch.zeros_like(x, dtype=acc)
    layout = row_layout(model, x)
    with capture(model, []):
        for sl in chunks(n * b, batch_size):  # rows are sample-major: row r = (sample r // b, image r % b)
            r = torch.arange(sl.start, sl.stop, device=x.device)
            s, i = r // b, r % b
            ref = refs[index[s, i], i if refs.shape[1] == b else torch.zeros_like(i)]
            xn = x[i] + noise(s, i)
            rows = in_layout(ref + alpha[s, i].view(-1, 1, 1, 1) * (xn - ref), layout).requires_grad_(True)
            o = model(rows.clone())
            check_finite(o, "outputs on the GradientSHAP samples")
            g = input_grad(row_scores(o, target, None if idx is None else idx[i]), rows)
            total.index_add_(0, i, ((xn - ref) * g).to(acc))
    return Explanation(maps=(total / n).to(x.dtype), method="gradient_shap", target=idx,
                       scores=row_scores(out, target, idx),
                       extras={"n_samples": n, "stdev": stdev, "n_baselines": refs.shape[0],
                               "forward_backward_passes": n * b}, outputs=tensor_outputs(out))


register("gradient_shap", gradient_shap, kind="pixel", aliases=("gradientshap", "gradshap", "expected_gradients"),
         doc="GradientSHAP (Lundberg & Lee 2017): expected gradients from random references; a row is one sample")


# ---------------------------------------------------------------------------------- feature-based methods

def perturbed_scores(model: nn.Module, x: torch.Tensor, target: Target, idx: torch.Tensor | None, score: str,
                     batch_size: int | None, n_rows: int, make_rows: Callable[[torch.Tensor], torch.Tensor],
                     image_of: Callable[[torch.Tensor], torch.Tensor], what: str) -> torch.Tensor:
    """Scores of ``n_rows`` perturbed rows (built by ``make_rows(r)``), all images' rows batched together."""
    scores = torch.empty(n_rows, dtype=torch.float64, device=x.device)

    def consume(_i, s, r):
        scores[r] = s.double()
    score_rows(model, n_rows, lambda r: (make_rows(r), r), image_of=image_of, device=x.device, target=target,
               idx=idx, score=score, batch_size=batch_size, consume=consume, what=what)
    return scores


def _features(x: torch.Tensor, features, n_segments: int, cell) -> tuple[torch.Tensor, torch.Tensor]:
    fm = feature_masks(x, features, n_segments=n_segments, cell=cell)
    return fm.expand(x.shape[0], -1, -1, -1), n_features(fm, x.shape[0])


def spread_features(phi: torch.Tensor, fm: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-feature values (B, F) onto the input values of each feature: (B, C, H, W)."""
    b = x.shape[0]
    return phi.gather(1, fm.reshape(b, -1)).reshape(fm.shape).expand_as(x).to(x.dtype).contiguous()


def _permutations(nf: torch.Tensor, n: int, given: torch.Tensor | None, seed: int) -> torch.Tensor:
    """(B, n, F_max): sample s's order of the features of image i (padded with -1)."""
    b, fmax = len(nf), int(nf.max())
    out = torch.full((b, n, fmax), -1, dtype=torch.long)
    if given is not None:
        p = torch.as_tensor(given).long().cpu()
        if p.dim() == 1:
            p = p[None]
        if p.dim() != 2 or p.shape[0] < 1 or not bool((nf == p.shape[1]).all()):
            raise ValueError(f"permutations must have shape (n, F) with F the number of features of every image "
                             f"({sorted(set(nf.tolist()))}), got {tuple(p.shape)}")
        if not bool((p.sort(1).values == torch.arange(p.shape[1])).all()):
            raise ValueError("each row of permutations must be a permutation of 0..F-1")
        return p[None].expand(b, -1, -1).to(nf.device)
    if n < 1:
        raise ValueError(f"n_samples must be >= 1, got {n}")
    for s in range(n):
        for f in sorted(set(nf.tolist())):
            gen = torch.Generator().manual_seed(seed_for(seed, s, f))
            out[(nf == f).cpu(), s, :f] = torch.randperm(f, generator=gen)
    return out.to(nf.device)


def shapley_sampling(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                     features: str | torch.Tensor = "slic", n_samples: int = 25,
                     baseline: float | torch.Tensor = 0.0, score: str = "logit", seed: int = 0,
                     permutations: torch.Tensor | None = None, n_segments: int = 50,
                     cell: int | tuple[int, int] | None = None, batch_size: int | None = None) -> Explanation:
    """Shapley value sampling (Castro et al. 2009; Strumbelj & Kononenko 2010): each feature's mean marginal
    contribution to the target score when features are added to the ``baseline`` in random orders.

    ``features``: "slic" (``n_segments`` superpixels per image), "grid" (``cell`` pixel squares) or integer
    label masks. ``n_samples`` random orders (Captum's default 25), drawn per sample number and feature count
    from ``seed``; ``permutations`` (n, F) gives them. ``score``: "logit" or "softmax". A row is one image with
    one prefix of one order: 1 + n x (F - 1) rows per image (an order's last prefix is the image, scored by the
    clean pass), all images' rows batched together.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    model = forward_only_model(model, x)  # no gradients: folded BatchNorms, in-place activations (CPU)
    b = x.shape[0]
    fm, nf = _features(x, features, n_segments, cell)
    perms = _permutations(nf, n_samples, permutations, seed).to(x.device)
    n = perms.shape[1]
    fmax = perms.shape[2]
    # pos[i, s, f]: the step at which feature f joins in order s (F_max for padding: never)
    pos = torch.full(perms.shape[:2] + (fmax + 1,), fmax, dtype=torch.long, device=perms.device)
    pos.scatter_(2, torch.where(perms >= 0, perms, fmax), torch.arange(fmax, device=perms.device).expand_as(perms))
    pos = pos[..., :fmax].to(x.device)
    base = as_baseline(baseline, x)
    # rows: first each image's baseline (step -1), then image-major all (sample, step) pairs
    counts = n * nf
    img = torch.cat([torch.arange(b, device=x.device), torch.repeat_interleave(torch.arange(b, device=x.device),
                                                                             counts.to(x.device))])
    starts = torch.cumsum(counts, 0) - counts
    off = torch.arange(len(img) - b, device=x.device) - starts.to(x.device)[img[b:]]
    step = torch.cat([torch.full((b,), -1, device=x.device), off % nf.to(x.device)[img[b:]]])
    samp = torch.cat([torch.zeros(b, dtype=torch.long, device=x.device), off // nf.to(x.device)[img[b:]]])
    flat = fm.reshape(b, -1)
    layout = row_layout(model, x)

    def make_rows(r: torch.Tensor) -> torch.Tensor:
        i = img[r]
        present = torch.gather(pos[i, samp[r]], 1, flat[i]) <= step[r][:, None]
        return in_layout(torch.where(present.reshape((len(r),) + tuple(fm.shape[1:])), x[i], base[i]), layout)

    idx, out = clean_pass(model, x, target, batch_size)
    # an order's last prefix holds every feature: the image itself, whose score the clean pass gave
    full = step == nf.to(x.device)[img] - 1
    run = torch.nonzero(~full).squeeze(1)
    sc = torch.empty(len(img), dtype=torch.float64, device=x.device)
    sc[run] = perturbed_scores(model, x, target, idx, score, batch_size, len(run), lambda r: make_rows(run[r]),
                               lambda r: img[run[r]], "inputs with features added")
    sc[full] = row_scores(out, target, idx, score).double()[img[full]]
    prev = torch.cat([sc[:1], sc[:-1]])
    first = step == 0
    prev[first] = sc[:b][img[first]]
    marg = (sc - prev)[b:]
    added = perms[img[b:], samp[b:], step[b:]]
    phi = torch.zeros(b * fmax, dtype=torch.float64, device=x.device)
    phi.index_add_(0, img[b:] * fmax + added, marg)
    phi = phi.view(b, fmax) / n
    return Explanation(maps=spread_features(phi, fm, x), method="shapley_sampling", target=idx,
                       scores=row_scores(out, target, idx, score),
                       extras={"n_samples": n, "n_features": nf, "feature_values": phi.to(x.dtype),
                               "feature_masks": fm, "baseline_scores": sc[:b].to(x.dtype), "score": score,
                               "forward_passes": len(run)}, outputs=tensor_outputs(out))


register("shapley_sampling", shapley_sampling, kind="pixel",
         aliases=("shapley_value_sampling", "shapleyvaluesampling", "svs"),
         doc="Shapley value sampling on superpixels (Castro et al. 2009), 25 orders; a row is one order prefix")


def feature_ablation(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                     features: str | torch.Tensor = "slic", baseline: float | torch.Tensor = 0.0,
                     score: str = "logit", n_segments: int = 50, cell: int | tuple[int, int] | None = None,
                     batch_size: int | None = None) -> Explanation:
    """Feature ablation: the drop of the target score when one feature is set to ``baseline``, for each feature
    (Captum's FeatureAblation with a feature mask).

    ``features``: "slic" (``n_segments`` superpixels per image), "grid" (``cell`` pixel squares) or integer
    label masks. A row is one image with one feature ablated: F rows per image, all images' rows batched. A
    feature whose values already equal the baseline (a black border ablated to 0, say) cannot change the output:
    its row is not run and its value is 0 (``extras["unchanged_features"]`` counts them).
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    model = forward_only_model(model, x)  # no gradients: folded BatchNorms, in-place activations (CPU)
    b = x.shape[0]
    fm, nf = _features(x, features, n_segments, cell)
    base = as_baseline(baseline, x)
    img = torch.repeat_interleave(torch.arange(b, device=x.device), nf.to(x.device))
    feat = torch.arange(len(img), device=x.device) - (torch.cumsum(nf, 0) - nf).to(x.device)[img]

    layout = row_layout(model, x)

    def make_rows(r: torch.Tensor) -> torch.Tensor:
        i = img[r]
        off = fm[i] == feat[r].view(-1, 1, 1, 1)
        return in_layout(torch.where(off, base[i], x[i]), layout)

    fmax = int(nf.max())
    # how many values of each feature differ from the baseline: none -> the ablated row is the image itself
    changed = torch.zeros(b, fmax, dtype=torch.float64, device=x.device)
    changed.scatter_add_(1, fm.expand_as(x).reshape(b, -1), (x != base).reshape(b, -1).double())
    run = torch.nonzero(changed[img, feat] > 0).squeeze(1)
    idx, out = clean_pass(model, x, target, batch_size)
    clean = row_scores(out, target, idx, score)
    sc = clean.double()[img].clone()
    sc[run] = perturbed_scores(model, x, target, idx, score, batch_size, len(run), lambda r: make_rows(run[r]),
                               lambda r: img[run[r]], "inputs with a feature ablated")
    phi = torch.zeros(b, fmax, dtype=torch.float64, device=x.device)
    phi[img, feat] = clean.double()[img] - sc
    return Explanation(maps=spread_features(phi, fm, x), method="feature_ablation", target=idx, scores=clean,
                       extras={"n_features": nf, "feature_values": phi.to(x.dtype), "feature_masks": fm,
                               "score": score, "forward_passes": len(run),
                               "unchanged_features": len(img) - len(run)},
                       outputs=tensor_outputs(out))


register("feature_ablation", feature_ablation, kind="pixel", aliases=("featureablation",),
         doc="Feature ablation on superpixels: score drop when a feature is set to the baseline; a row is one "
             "ablated feature")


def feature_permutation(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                        features: str | torch.Tensor = "grid", score: str = "logit", seed: int = 0,
                        permutations: torch.Tensor | None = None, cell: int | tuple[int, int] | None = None,
                        batch_size: int | None = None) -> Explanation:
    """Feature permutation (Breiman 2001; Fisher et al. 2019): the drop of the target score when one feature's
    values are swapped among the images of the batch (Captum's FeaturePermutation with a feature mask).

    A batch-level method: it needs at least two images and one feature mask shared by all of them ("grid" of
    ``cell`` pixels, or an (H, W) / (1, C, H, W) label mask), and an image's map depends on the others. Feature
    f takes image ``permutations[f][i]``'s values into image i (drawn from ``seed`` per feature, never the
    identity, when not given). A row is one image with one feature permuted: F x B rows.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    model = forward_only_model(model, x)  # no gradients: folded BatchNorms, in-place activations (CPU)
    b = x.shape[0]
    if b < 2:
        raise ValueError("feature_permutation swaps features between the images of a batch: give at least 2 images")
    fm0 = feature_masks(x, features, cell=cell)
    if fm0.shape[0] != 1:
        raise ValueError("feature_permutation needs one feature mask shared by all images (features='grid' or an "
                         "(H, W) mask), not one per image")
    nf = int(fm0.max()) + 1
    if permutations is None:
        perms = []
        for f in range(nf):
            gen = torch.Generator().manual_seed(seed_for(seed, f))
            p = torch.randperm(b, generator=gen)
            while bool((p == torch.arange(b)).all()):
                p = torch.randperm(b, generator=gen)
            perms.append(p)
        perm = torch.stack(perms)
    else:
        perm = torch.as_tensor(permutations).long().cpu()
        if tuple(perm.shape) != (nf, b) or not bool((perm.sort(1).values == torch.arange(b)).all()):
            raise ValueError(f"permutations must have shape ({nf}, {b}): per feature a permutation of the images")
    perm = perm.to(x.device)
    fm = fm0.expand(b, -1, -1, -1)

    layout = row_layout(model, x)

    def make_rows(r: torch.Tensor) -> torch.Tensor:  # row r = (feature r // b, image r % b)
        f, i = r // b, r % b
        return in_layout(torch.where(fm[i] == f.view(-1, 1, 1, 1), x[perm[f, i]], x[i]), layout)

    idx, out = clean_pass(model, x, target, batch_size)
    clean = row_scores(out, target, idx, score)
    sc = perturbed_scores(model, x, target, idx, score, batch_size, nf * b, make_rows, lambda r: r % b,
                 "inputs with a feature permuted")
    phi = (clean.double()[None, :] - sc.view(nf, b)).T.contiguous()
    return Explanation(maps=spread_features(phi, fm, x), method="feature_permutation", target=idx, scores=clean,
                       extras={"n_features": nf, "feature_values": phi.to(x.dtype), "feature_masks": fm,
                               "permutations": perm, "score": score, "forward_passes": nf * b},
                       outputs=tensor_outputs(out))


# A batch-level method (it needs two images, and each map depends on the rest of the batch): run by name only,
# never as part of "all".
register("feature_permutation", feature_permutation, kind="pixel", aliases=("featurepermutation",),
         applies=lambda model: False,
         doc="Feature permutation (Fisher et al. 2019): score drop when a grid cell is swapped between the "
             "batch's images; a row is one permuted feature")
