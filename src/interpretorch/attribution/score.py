"""Score-CAM and Ablation-CAM: channel weights from the model's response to masked inputs or ablated channels.

Both score one row per (image, channel) pair through the same chunked loop as occlusion and RISE
(``common.score_rows``), ``batch_size`` rows per model call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import finish_region, method_inputs, resolve_layer, score_rows
from interpretorch.attribution.registry import register
from interpretorch.capture import capture, frozen, patched
from interpretorch.core.targets import Target, check_finite, target_indices, target_scores, tensor_outputs
from interpretorch.explanation import Explanation
from interpretorch.models.layers import tail_after

SCORE_WEIGHTINGS = ("softmax", "logit", "channel_softmax")


def layer_activations(model: nn.Module, x: torch.Tensor, name: str, target: Target
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """One recorded forward pass: activations at ``name``, outputs, indices and clean scores."""
    with capture(model, name, grad=False) as rec:
        out = model(x)
        check_finite(out)
        a = rec[name]
    if a.dim() != 4:
        raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; this method needs a (B, C, H, W) output")
    idx = target_indices(out, target)
    return a, out, idx, target_scores(out, target, idx)


def score_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
              layer: str | nn.Module | None = None, *, batch_size: int | None = None, weighting: str = "softmax",
              align_corners: bool = False, relu: bool = True, normalize: bool = False) -> Explanation:
    """Score-CAM (Wang et al. 2020): weight each channel by the target score of the input masked with it.

    ``weighting``: "softmax" (the paper: target class probability of each masked input), "logit"
    (raw target score), or "channel_softmax" (logits softmaxed across channels, pytorch-grad-cam's
    rule). Channels whose normalised map is constant give the same (all-zero) masked input, which is
    evaluated once; masked inputs of all images are batched together, ``batch_size`` rows per call.
    ``align_corners`` sets how the layer's maps are upsampled into masks (pytorch-grad-cam uses True;
    False matches how the final map is upsampled).
    """
    if weighting not in SCORE_WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {SCORE_WEIGHTINGS}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    a, out, idx, clean = layer_activations(model, x, name, target)
    b, c = a.shape[:2]
    size = tuple(x.shape[-2:])
    score = "softmax" if weighting == "softmax" else "logit"
    flat = a.reshape(b, c, -1)
    varying = flat.amax(-1) > flat.amin(-1)  # (B, C): constant channels give an all-zero mask
    pairs = varying.nonzero(as_tuple=False)  # (N, 2) of (image, channel)
    weights = torch.zeros(b, c, dtype=out.dtype if isinstance(out, torch.Tensor) else x.dtype, device=x.device)
    if (~varying).any():
        with frozen(model):
            zero_out = model(torch.zeros_like(x[:1]))
            if not isinstance(zero_out, torch.Tensor):  # a list / dict output: one all-zero row per image
                zero_out = model(torch.zeros_like(x))
        check_finite(zero_out, "outputs on the all-zero masked input")
        rows = (~varying).nonzero(as_tuple=False)
        if isinstance(zero_out, torch.Tensor):
            zero_out = zero_out.expand(b, *zero_out.shape[1:])
        per_img = target_scores(zero_out, target, idx, score)
        weights[rows[:, 0], rows[:, 1]] = per_img[rows[:, 0]].to(weights.dtype)

    def make_rows(r: torch.Tensor):
        bi, ci = pairs[r, 0], pairs[r, 1]
        up = F.interpolate(a[bi, ci][:, None], size=size, mode="bilinear", align_corners=align_corners)[:, 0]
        lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
        return x[bi] * ((up - lo) / (hi - lo))[:, None], ci

    def consume(bi: torch.Tensor, s: torch.Tensor, ci: torch.Tensor) -> None:
        weights[bi, ci] = s.to(weights.dtype)

    score_rows(model, pairs.shape[0], make_rows, image_of=lambda r: pairs[r, 0], device=x.device, target=target,
               idx=idx, score=score, batch_size=batch_size, consume=consume, what="masked inputs")
    if weighting == "channel_softmax":
        weights = weights.softmax(dim=1)
    raw, maps = finish_region(torch.einsum("bc,bchw->bhw", weights.to(a.dtype), a), size, relu, normalize)
    return Explanation(maps=maps, method="scorecam", target=idx, layer=name, raw=raw, scores=clean,
                       extras={"channel_weights": weights}, outputs=tensor_outputs(out))


register("scorecam", score_cam, kind="region", needs_layer=True, aliases=("score-cam",))


def ablation_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                 layer: str | nn.Module | None = None, *, batch_size: int | None = None, relu: bool = True,
                 normalize: bool = False) -> Explanation:
    """Ablation-CAM (Desai & Ramaswamy 2020): weight channel k by the relative score drop when it is zeroed.

    When the layer sits in a chain of sequential stages only the network after the layer is re-run
    for each ablation; otherwise the whole model runs with the layer's output replaced. A row is one
    (image, channel) ablation. Channels that are zero everywhere cannot change the output and get
    weight 0 without a pass.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    a, out, idx, clean = layer_activations(model, x, name, target)
    b, c = a.shape[:2]
    tail = tail_after(model, name)
    pairs = a.reshape(b, c, -1).ne(0).any(-1).nonzero(as_tuple=False)
    ablated = clean[:, None].expand(b, c).clone()
    held: dict[str, torch.Tensor] = {}

    def make_rows(r: torch.Tensor):
        bi, ci = pairs[r, 0], pairs[r, 1]
        acts = a[bi].clone()
        acts[torch.arange(len(bi), device=a.device), ci] = 0
        if tail is not None:
            return acts, ci
        held["acts"] = acts
        return x[bi], ci

    def run_model(rows: torch.Tensor) -> torch.Tensor:
        with patched(model, name, lambda _out: held["acts"]):
            return model(rows)

    def consume(bi: torch.Tensor, s: torch.Tensor, ci: torch.Tensor) -> None:
        ablated[bi, ci] = s.to(ablated.dtype)

    score_rows(tail if tail is not None else run_model, pairs.shape[0], make_rows, image_of=lambda r: pairs[r, 0],
               device=x.device, target=target, idx=idx, score="logit", batch_size=batch_size, consume=consume,
               what="outputs with an ablated channel", frozen_model=model)
    denom = clean[:, None]
    denom = torch.where(denom.abs() > 1e-12, denom, torch.full_like(denom, 1e-12))
    weights = (clean[:, None] - ablated) / denom
    raw, maps = finish_region(torch.einsum("bc,bchw->bhw", weights.to(a.dtype), a), tuple(x.shape[-2:]), relu,
                              normalize)
    return Explanation(maps=maps, method="ablationcam", target=idx, layer=name, raw=raw, scores=clean,
                       extras={"channel_weights": weights}, outputs=tensor_outputs(out))


register("ablationcam", ablation_cam, kind="region", needs_layer=True, aliases=("ablation-cam",), default=True)
