"""Score-CAM and Ablation-CAM: channel weights from the model's response to masked inputs or ablated channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import callable_rows, check_inputs, resolve_layer, rows_per_pass
from interpretorch.capture import capture, preserved_state
from interpretorch.explanation import Explanation, normalize_maps, upsample
from interpretorch.models.layers import get_layer, tail_after
from interpretorch.targets import Target, check_finite, target_indices, target_scores

SCORE_WEIGHTINGS = ("softmax", "logit", "channel_softmax")


def _activations(model: nn.Module, x: torch.Tensor, name: str, target: Target):
    """One hook-recorded forward pass: activations at ``name``, outputs, indices and scores."""
    with capture(model, name, grad=False) as rec, torch.no_grad():
        out = model(x)
        check_finite(out)
        a = rec[name]
    if a.dim() != 4:
        raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; this method needs a (B, C, H, W) output")
    idx = target_indices(out, target)
    scores = target_scores(out, target, idx)
    return a, out, idx, scores


def _score_of(out: torch.Tensor, target: Target, idx: torch.Tensor | None, weighting: str) -> torch.Tensor:
    """Score of each masked output row: target probability ("softmax") or target logit / callable value."""
    if idx is None:
        return target_scores(out, target)
    if weighting == "softmax":
        return out.softmax(dim=1).gather(1, idx[:, None]).squeeze(1)
    return out.gather(1, idx[:, None]).squeeze(1)


def score_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
              layer: str | nn.Module | None = None, *, batch_size: int | None = None, weighting: str = "softmax",
              align_corners: bool = False, relu: bool = True, normalize: bool = False) -> Explanation:
    """Score-CAM (Wang et al. 2020): weight each channel by the target score of the input masked with it.

    ``weighting``: "softmax" (the paper: target class probability of each masked input), "logit"
    (raw target score), or "channel_softmax" (logits softmaxed across channels, pytorch-grad-cam's
    rule). Channels whose normalised map is constant give the same (all-zero) masked input, which is
    evaluated once; masked inputs of all images are batched together through ``batch_size`` (default 8 on
    CPU, where small batches are fastest, 64 on a GPU). ``align_corners`` sets how the layer's maps are
    upsampled into masks (pytorch-grad-cam uses True; False matches how the final map is upsampled).
    """
    if weighting not in SCORE_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {SCORE_WEIGHTINGS}")
    x = check_inputs(model, inputs)
    batch_size = rows_per_pass(batch_size, x.device)
    name = resolve_layer(model, layer, x)
    a, out, idx, clean = _activations(model, x, name, target)
    b, c = a.shape[:2]
    size = tuple(x.shape[-2:])
    flat = a.reshape(b, c, -1)
    lo, hi = flat.min(-1).values, flat.max(-1).values
    varying = hi > lo  # (B, C): constant channels give an all-zero mask
    pairs = varying.nonzero(as_tuple=False)  # (N, 2) of (image, channel)
    weights = torch.zeros(b, c, dtype=out.dtype, device=x.device)
    with preserved_state(model), torch.no_grad():
        model.eval()
        if (~varying).any():
            zero_out = model(torch.zeros_like(x[:1]))
            check_finite(zero_out, "outputs on the all-zero masked input")
            rows = (~varying).nonzero(as_tuple=False)
            zo = zero_out.expand(b, -1)
            per_img = target_scores(zo, target) if idx is None else _score_of(zo, target, idx, weighting)
            weights[rows[:, 0], rows[:, 1]] = per_img[rows[:, 0]].to(weights.dtype)
        for start in range(0, pairs.shape[0], batch_size):
            p = pairs[start:start + batch_size]
            bi, ci = p[:, 0], p[:, 1]
            maps = a[bi, ci]  # (n, h, w)
            up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=align_corners)[:, 0]
            m_lo = up.amin(dim=(1, 2), keepdim=True)
            m_hi = up.amax(dim=(1, 2), keepdim=True)
            masks = (up - m_lo) / (m_hi - m_lo)
            o = model(x[bi] * masks[:, None])
            check_finite(o, "outputs on masked inputs")
            if idx is None:
                s = callable_rows(target, o)
            else:
                s = _score_of(o, target, idx[bi], weighting)
            weights[bi, ci] = s.to(weights.dtype)
    if weighting == "channel_softmax":
        weights = weights.softmax(dim=1)
    raw = torch.einsum("bc,bchw->bhw", weights.to(a.dtype), a)
    return _finish(raw, size, "scorecam", idx, name, clean, relu, normalize, weights)


def _finish(raw, size, method, idx, name, clean, relu, normalize, weights) -> Explanation:
    if relu:
        raw = F.relu(raw)
    maps = upsample(raw, size)
    if normalize:
        maps = normalize_maps(maps)
    return Explanation(maps=maps, method=method, target=idx, layer=name, raw=raw, scores=clean,
                       extras={"channel_weights": weights})


def ablation_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                 layer: str | nn.Module | None = None, *, batch_size: int = 256, relu: bool = True,
                 normalize: bool = False) -> Explanation:
    """Ablation-CAM (Desai & Ramaswamy 2020): weight channel k by the relative score drop when it is zeroed.

    When the layer sits in a chain of sequential stages only the network after the layer is re-run
    for each ablation; otherwise the whole model runs with the layer's output replaced.
    Channels that are zero everywhere cannot change the output and get weight 0 without a pass.
    """
    x = check_inputs(model, inputs)
    name = resolve_layer(model, layer, x)
    a, out, idx, clean = _activations(model, x, name, target)
    b, c = a.shape[:2]
    tail = tail_after(model, name)
    active = a.reshape(b, c, -1).ne(0).any(-1)
    pairs = active.nonzero(as_tuple=False)
    ablated = clean[:, None].expand(b, c).clone()
    module = get_layer(model, name)
    with preserved_state(model), torch.no_grad():
        model.eval()
        for start in range(0, pairs.shape[0], batch_size):
            p = pairs[start:start + batch_size]
            bi, ci = p[:, 0], p[:, 1]
            acts = a[bi].clone()
            acts[torch.arange(len(bi), device=a.device), ci] = 0
            if tail is not None:
                o = tail(acts)
            else:
                handle = module.register_forward_hook(lambda _m, _i, _o, acts=acts: acts)
                try:
                    o = model(x[bi])
                finally:
                    handle.remove()
            check_finite(o, "outputs with an ablated channel")
            s = callable_rows(target, o) if idx is None else o.gather(1, idx[bi][:, None]).squeeze(1)
            ablated[bi, ci] = s.to(ablated.dtype)
    denom = clean[:, None]
    denom = torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, 1e-12))
    weights = (clean[:, None] - ablated) / denom
    raw = torch.einsum("bc,bchw->bhw", weights.to(a.dtype), a)
    return _finish(raw, tuple(x.shape[-2:]), "ablationcam", idx, name, clean, relu, normalize, weights)
