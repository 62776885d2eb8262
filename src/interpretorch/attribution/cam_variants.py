"""CAMs that need more than one plain forward / backward: ShapleyCAM (a Hessian-vector product), FinerCAM (a
contrastive target), Smooth Grad-CAM++ (gradients averaged over noisy copies) and SESS (any CAM over scales and
tiles).

Each runs the images of a batch together, ``batch_size`` rows per model call, with hooks owned by ``capture``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.cam import CAM_RULES
from interpretorch.attribution.common import (clean_pass, finish_region, method_inputs, resolve_layer, row_scores,
                                               score_rows)
from interpretorch.attribution.noise import noise_sigma, unit_noise
from interpretorch.attribution.registry import get_method, register
from interpretorch.capture import capture
from interpretorch.core.batching import chunks
from interpretorch.core.targets import (Target, check_finite, concat_outputs, image_target, split_target,
                                        target_indices, target_scores, tensor_outputs)
from interpretorch.explanation import Explanation, normalize_maps


def _check_spatial(a: torch.Tensor, name: str) -> None:
    if a.dim() != 4:
        raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; this CAM needs a (B, C, H, W) output")
    if a.shape[2] * a.shape[3] == 1:
        raise ValueError(f"layer {name!r} gives 1x1 maps {tuple(a.shape)}, so the CAM would be constant; "
                         "choose a layer with a spatial output (`interpretorch layers` lists them)")


def _gradient_rule(base: str, method: str):
    if base not in CAM_RULES or not CAM_RULES[base].uses_gradients:
        usable = [m for m, r in CAM_RULES.items() if r.uses_gradients]
        raise ValueError(f"{method} needs a gradient CAM as base, got {base!r}; choose one of {usable}")
    return CAM_RULES[base]


def weighted_pass(model: nn.Module, inputs: torch.Tensor, target: Target, layer: str | nn.Module | None,
                  batch_size: int | None, rule: Callable[[torch.Tensor, Any, SimpleNamespace, torch.Tensor],
                                                         torch.Tensor],
                  score_fn: Callable[[torch.Tensor, torch.Tensor | None, Target], torch.Tensor] | None = None,
                  second_order: bool = False
                  ) -> tuple[torch.Tensor, str, torch.Tensor | None, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One forward and backward per chunk to ``layer``; ``rule(a, g, ctx, hvp)`` gives the raw (B, h, w) map.

    Returns (raw maps, layer name, class indices or None, target scores, outputs, the checked inputs).

    ``score_fn(out, idx, target)`` replaces the target score when given (FinerCAM's contrast); with
    ``second_order`` the backward keeps its graph and ``hvp`` = (d g / d a) a is passed to the rule.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    n = x.shape[0]
    name = resolve_layer(model, layer, x)
    raws, idx_all, scores_all, outs = [], [], [], []
    for sl in chunks(n, batch_size):
        with capture(model, name, grad=True) as rec:
            out = model(x[sl])
            check_finite(out)
            t = split_target(target, sl)
            idx = target_indices(out, t)
            scores = score_fn(out, idx, t) if score_fn is not None else target_scores(out, t, idx)
            act = rec.raw(name)
            _check_spatial(act, name)
            if not scores.requires_grad:
                raise RuntimeError("the target scores do not depend on the layer")
            hvp = None
            if second_order:
                (g,) = torch.autograd.grad(scores.sum(), act, create_graph=True)
                hvp = torch.autograd.grad(g, act, grad_outputs=act.detach(), allow_unused=True)[0] \
                    if g.requires_grad else None
                hvp = torch.zeros_like(act) if hvp is None else hvp.detach()
                g = g.detach()
            else:
                (g,) = torch.autograd.grad(scores.sum(), act)
        a = act.detach()
        raws.append(rule(a, g, SimpleNamespace(model=model, idx=idx, fc=None), hvp))
        if idx is not None:
            idx_all.append(idx)
        scores_all.append(scores.detach())
        outs.append(out.detach() if isinstance(out, torch.Tensor) else out)
    idx_cat = torch.cat(idx_all) if idx_all else None
    return torch.cat(raws), name, idx_cat, torch.cat(scores_all), tensor_outputs(concat_outputs(outs)), x


def shapley_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                layer: str | nn.Module | None = None, *, batch_size: int | None = None, relu: bool = True,
                normalize: bool = False) -> Explanation:
    """ShapleyCAM (Cai 2025): channels weighted by the spatial mean of gradient - 1/2 Hessian x activation.

    The second-order term is the Hessian-vector product of the target score with respect to the layer,
    in the direction of the activations (one double backward per chunk). For networks that are piecewise
    linear after the layer (ReLU, max-pool, linear head) it is zero and ShapleyCAM equals Grad-CAM.
    """
    def rule(a, g, ctx, hvp):
        w = (g - 0.5 * hvp).mean(dim=(2, 3), keepdim=True)
        return (w * a).sum(1)

    raw, name, idx, scores, out, x = weighted_pass(model, inputs, target, layer, batch_size, rule,
                                                    second_order=True)
    raw, maps = finish_region(raw, tuple(x.shape[-2:]), relu, normalize)
    return Explanation(maps=maps, method="shapleycam", target=idx, layer=name, raw=raw, scores=scores, outputs=out)


register("shapleycam", shapley_cam, kind="region", needs_layer=True, aliases=("shapley-cam",))


def finer_scores(out: torch.Tensor, idx: torch.Tensor, alpha: float = 1.0, comparisons: int = 3) -> torch.Tensor:
    """FinerCAM's target: the main class's logit minus ``alpha`` x each of the ``comparisons`` classes whose logits
    are closest to it, averaged with their softmax probabilities as weights (one score per row)."""
    if out.shape[1] < 2:
        raise ValueError("FinerCAM compares the target with other classes; the model has one output")
    k = min(comparisons, out.shape[1] - 1)
    if k < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons}")
    main = out.gather(1, idx[:, None])
    gap = (out.detach() - main.detach()).abs()
    gap.scatter_(1, idx[:, None], -1.0)  # the main class itself comes first and is skipped
    near = gap.argsort(dim=1, stable=True)[:, 1:k + 1]
    p = out.softmax(dim=1).gather(1, near)
    return (p * (main - alpha * out.gather(1, near))).sum(1) / (p.sum(1) + 1e-9)


def finer_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
              layer: str | nn.Module | None = None, *, batch_size: int | None = None, alpha: float = 1.0,
              comparisons: int = 3, base: str = "gradcam", relu: bool = True, normalize: bool = False
              ) -> Explanation:
    """FinerCAM (Zhang et al. 2025): a gradient CAM of the target's logit contrasted with its nearest classes.

    The score explained is sum_j p_j (y_target - alpha y_j) / sum_j p_j over the ``comparisons`` classes
    whose logits are nearest the target's, p_j their softmax probabilities (kept in the graph, as
    pytorch-grad-cam does); ``base`` is the gradient CAM rule (Grad-CAM by default). ``alpha=0`` gives the
    base CAM of the target. A callable target is not supported (the contrast needs classes).
    """
    rule_fn = _gradient_rule(base, "finercam").fn
    if callable(target) and not isinstance(target, torch.Tensor):
        raise ValueError("FinerCAM contrasts classes, so it needs class targets (top1, an int or one per image)")

    def score_fn(out, idx, t):
        return finer_scores(out, idx, alpha, comparisons)

    raw, name, idx, scores, out, x = weighted_pass(model, inputs, target, layer, batch_size,
                                                    lambda a, g, ctx, h: rule_fn(a, g, ctx), score_fn)
    raw, maps = finish_region(raw, tuple(x.shape[-2:]), relu, normalize)
    return Explanation(maps=maps, method="finercam", target=idx, layer=name, raw=raw, scores=scores, outputs=out,
                       extras={"alpha": alpha, "comparisons": comparisons, "base": base})


register("finercam", finer_cam, kind="region", needs_layer=True, aliases=("finer-cam",), targets=("class",),
         targets_note="it contrasts the class with its nearest classes")


def smooth_gradcampp(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                     layer: str | nn.Module | None = None, *, batch_size: int | None = None, n_samples: int = 8,
                     noise_level: float = 0.15, stdev: float | torch.Tensor | None = None, seed: int = 0,
                     relu: bool = True, normalize: bool = False) -> Explanation:
    """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with its gradient powers averaged over noisy copies.

    D1, D2, D3 are the means of the layer gradient and its square and cube over ``n_samples`` copies of
    each image with Gaussian noise (``noise_level`` x (max - min) of the image, or ``stdev`` in input
    units, as SmoothGrad); alpha = D2 / (2 D2 + sum(A) D3), weights sum(alpha ReLU(D1)) on the clean
    image's activations A. The noisy rows of all images are batched like SmoothGrad's, and sample s
    draws the same noise whatever the chunking. The paper's setting is n_samples=50 (torch-cam's
    default stdev is 0.3); the default 8 keeps ``explain --methods all`` affordable on a CPU.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    b = x.shape[0]
    name = resolve_layer(model, layer, x)
    sigma = noise_sigma(x, noise_level, stdev)
    acts, idx_all, scores_all, outs = [], [], [], []
    for sl in chunks(b, batch_size):  # the clean activations, class and score of each image
        with capture(model, name, grad=False) as rec:
            out = model(x[sl])
            check_finite(out)
            t = split_target(target, sl)
            idx = target_indices(out, t)
            scores_all.append(target_scores(out, t, idx))
            a = rec[name]
        _check_spatial(a, name)
        acts.append(a)
        outs.append(out)
        if idx is not None:
            idx_all.append(idx)
    a = torch.cat(acts)
    idx = torch.cat(idx_all) if idx_all else None
    d1, d2, d3 = (torch.zeros_like(a, dtype=torch.float64) for _ in range(3))
    for sl in chunks(n_samples * b, batch_size):  # sample-major rows, as SmoothGrad
        r = torch.arange(sl.start, sl.stop, device=x.device)
        s, i = r // b, r % b
        uniq, inv = torch.unique(s, return_inverse=True)
        noise = unit_noise(uniq.tolist(), tuple(x.shape[1:]), seed, dtype=x.dtype, device=x.device)[inv]
        rows = x[i] + sigma[i].view(-1, 1, 1, 1) * noise
        with capture(model, name, grad=True) as rec:
            o = model(rows)
            check_finite(o, "outputs on noisy copies")
            sc = target_scores(o, target, None if idx is None else idx[i])
            g = rec.gradients(sc)[name].double()
        d1.index_add_(0, i, g)
        d2.index_add_(0, i, g * g)
        d3.index_add_(0, i, g * g * g)
    d1, d2, d3 = d1 / n_samples, d2 / n_samples, d3 / n_samples
    denom = 2 * d2 + a.double().sum(dim=(2, 3), keepdim=True) * d3
    alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                        torch.zeros_like(d2))
    w = (alpha * F.relu(d1)).sum(dim=(2, 3), keepdim=True)
    raw, maps = finish_region((w * a.double()).sum(1).to(a.dtype), tuple(x.shape[-2:]), relu, normalize)
    return Explanation(maps=maps, method="smoothgradcampp", target=idx, layer=name, raw=raw,
                       scores=torch.cat(scores_all), outputs=tensor_outputs(concat_outputs(outs)),
                       extras={"stdev": sigma, "n_samples": n_samples})


register("smoothgradcampp", smooth_gradcampp, kind="region", needs_layer=True,
         aliases=("smooth-grad-cam++", "smoothgradcam++", "smooth_gradcampp"))


# --- SESS ------------------------------------------------------------------------------------------------------------

def _window_starts(length: int, step: int, window: int) -> list[int]:
    """Origins of windows of ``window`` cells every ``step`` cells; the last is moved back inside the image."""
    starts = []
    for s in range(0, length, step):
        if s + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(s)
    return starts


def _resize_short(x: torch.Tensor, short: int) -> torch.Tensor:
    """Resize (B, C, H, W) so the shorter side is ``short`` (bilinear, antialiased, as torchvision's resize)."""
    h, w = x.shape[-2:]
    if h <= w:
        size = (short, int(short * w / h))
    else:
        size = (int(short * h / w), short)
    if size == (h, w):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def gaussian_blur(maps: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Blur (B, H, W) maps with a normalised ``kernel`` x ``kernel`` Gaussian, borders reflected (OpenCV's default)."""
    r = kernel // 2
    t = torch.arange(kernel, dtype=torch.float64, device=maps.device) - r
    k1 = torch.exp(-t * t / (2 * sigma * sigma))
    k1 = (k1 / k1.sum()).to(maps.dtype)
    y = maps[:, None]
    mode = "reflect" if min(maps.shape[-2:]) > r else "replicate"
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode=mode), k1.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), k1.view(1, 1, -1, 1))
    return y[:, 0]


def sess(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", layer: str | nn.Module | None = None,
         *, batch_size: int | None = None, base: str = "gradcam", base_options: dict | None = None,
         scales: list[int] | None = None, num_scales: int = 3, scale_step_ratio: float = 2.0 / 7.0,
         window: int | None = None, step: int | None = None, pre_filter_ratio: float = 0.0, theta: float = 0.0,
         pool: str = "mean", smooth: bool = True, softmax_scores: bool = True) -> Explanation:
    """SESS (Tyagi et al. 2022): any CAM run on tiles of the image at several scales, fused by patch score.

    Each image is resized so its shorter side is each of ``scales`` (default ``num_scales`` sizes from the
    window up by ``scale_step_ratio`` x window), tiled by a ``window`` (default the shorter side) every
    ``step`` (default the window; border tiles moved back inside); each tile is scored (softmax target
    probability, or the clipped logit) and the lowest ``pre_filter_ratio`` of tiles dropped; the ``base``
    CAM of each tile (min-max normalised) times its score / the best score is pasted back and resized to
    the image, and the tiles are fused by the mean over the tiles where the CAM exceeds ``theta`` (or
    their max), then Gaussian-blurred (11 x 11, sigma 5) and min-max normalised, as pytorch-grad-cam's
    ``SESS``. The paper's setting is num_scales=12 (pytorch-grad-cam's default); the default 3 keeps
    CPU runs affordable. The tiles of all images go through the model together.
    """
    if pool not in ("mean", "max"):
        raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
    if not 0.0 <= pre_filter_ratio < 1.0:
        raise ValueError(f"pre_filter_ratio must be in [0, 1), got {pre_filter_ratio}")
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    spec = get_method(base)
    if spec.kind != "region" or not spec.needs_layer or spec.name == "sess":
        raise ValueError(f"SESS wraps a layer CAM (gradcam, gradcam++, scorecam, ...), got {base!r}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    b, _, h, w = x.shape
    idx, out = clean_pass(model, x, target, batch_size)
    clean = row_scores(out, target, idx)
    window = min(h, w) if window is None else int(window)
    step = window if step is None else int(step)
    if window < 1 or step < 1:
        raise ValueError(f"window and step must be >= 1, got {window} and {step}")
    if scales is None:
        inc = int(round(window * scale_step_ratio))
        scales = [window + inc * i for i in range(num_scales)]
    if any(s < window for s in scales):
        raise ValueError(f"every scale must be at least the window ({window}), got {scales}")
    # Tiles of every image: (image, scale index, y, x); the scaled images are kept once per scale.
    scaled = [_resize_short(x, s) for s in scales]
    tiles = [(si, y0, x0) for si, sc in enumerate(scaled)
             for y0 in _window_starts(sc.shape[-2], step, window) for x0 in _window_starts(sc.shape[-1], step, window)]
    n_t = len(tiles)
    tile_t = torch.tensor(tiles, device=x.device)

    def tile_rows(r: torch.Tensor) -> torch.Tensor:
        return torch.stack([scaled[int(tile_t[k, 0])][int(i), :, int(tile_t[k, 1]):int(tile_t[k, 1]) + window,
                                                       int(tile_t[k, 2]):int(tile_t[k, 2]) + window]
                            for i, k in zip((r // n_t).tolist(), (r % n_t).tolist())])

    scores = torch.zeros(b, n_t, dtype=torch.float64, device=x.device)

    def consume(i: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> None:
        scores[i, r % n_t] = s.double()

    score_rows(model, b * n_t, lambda r: (tile_rows(r), r), image_of=lambda r: r // n_t, device=x.device,
               target=target, idx=idx, score="softmax" if softmax_scores else "logit", batch_size=batch_size,
               consume=consume, what="SESS tiles")
    scores = scores.clamp_min(0)
    keep_n = n_t - int(n_t * pre_filter_ratio)
    order = scores.argsort(dim=1, stable=True)[:, n_t - keep_n:]  # the kept tiles of each image, ascending score
    best = scores.gather(1, order[:, -1:])
    weights = torch.where(best > 0, scores / torch.where(best > 0, best, torch.ones_like(best)),
                          torch.ones_like(scores))
    pairs = torch.stack([torch.arange(b, device=x.device)[:, None].expand(b, keep_n).reshape(-1),
                         order.reshape(-1)], 1)  # (image, tile)
    total = torch.zeros(b, h, w, dtype=x.dtype, device=x.device)
    counts = torch.zeros_like(total)
    opts = dict(base_options or {})
    for sl in chunks(len(pairs), batch_size):
        p = pairs[sl]
        rows = tile_rows(p[:, 0] * n_t + p[:, 1])
        e = spec(model, rows, image_target(target, idx, p[:, 0]), layer, batch_size=batch_size, **opts)
        cams = normalize_maps(e.maps) * weights[p[:, 0], p[:, 1]].to(x.dtype)[:, None, None]
        for cam, (i, k) in zip(cams, p.tolist()):
            si, y0, x0 = tiles[k]
            sh, sw = scaled[si].shape[-2:]
            canvas = torch.zeros(1, 1, sh, sw, dtype=x.dtype, device=x.device)
            canvas[0, 0, y0:y0 + window, x0:x0 + window] = cam
            full = F.interpolate(canvas, size=(h, w), mode="bilinear", align_corners=False)[0, 0] \
                if (sh, sw) != (h, w) else canvas[0, 0]
            if pool == "max":
                total[i] = torch.maximum(total[i], full)
            else:
                m = full > theta
                total[i] += torch.where(m, full, torch.zeros_like(full))
                counts[i] += m.to(x.dtype)
    if pool == "mean":
        total = torch.where(counts > 0, total / counts.clamp_min(1), torch.zeros_like(total))
    if smooth:
        total = gaussian_blur(total, 11, 5.0)
    maps = normalize_maps(total)
    name = resolve_layer(model, layer, x[:1, :, :window, :window]) if spec.needs_layer else None
    return Explanation(maps=maps, method="sess", target=idx, layer=name, raw=total, scores=clean,
                       outputs=tensor_outputs(out),
                       extras={"tiles": n_t, "scales": list(scales), "base": spec.name, "tile_scores": scores})


register("sess", sess, kind="region", needs_layer=True)
