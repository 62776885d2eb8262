"""FullGrad (Srinivas & Fleuret 2019): the input-gradient and the bias-gradients of every layer with a bias.

For a network built of linear pieces, f(x) = <grad_x f, x> + sum over biases b of <grad_b f, b> (the full-gradient
completeness); the saliency map post-processes each term and sums them. Convolutions and linear layers
contribute their own bias; batch norms in eval mode are affine maps whose implicit bias is
beta - gamma * running_mean / sqrt(running_var + eps) (the folding of the paper and its code).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import method_inputs
from interpretorch.attribution.registry import register
from interpretorch.capture import capture
from interpretorch.core.batching import chunks
from interpretorch.core.targets import (Target, check_finite, concat_outputs, split_target, target_indices,
                                        target_scores, tensor_outputs)
from interpretorch.explanation import Explanation

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def implicit_bias(module: nn.Module) -> torch.Tensor | None:
    """The bias a layer adds to each output channel: a conv's / linear's own, a batch norm's folded one, else None."""
    if isinstance(module, _NORMS):
        if module.running_mean is None or module.running_var is None:
            return None
        scale = module.weight if module.weight is not None else torch.ones_like(module.running_var)
        shift = module.bias if module.bias is not None else torch.zeros_like(module.running_mean)
        return (shift - module.running_mean * scale / torch.sqrt(module.running_var + module.eps)).detach()
    if isinstance(module, _CONVS + (nn.Linear,)) and module.bias is not None:
        return module.bias.detach()
    return None


def bias_layers(model: nn.Module) -> list[str]:
    """Names of the layers FullGrad reads a bias from (convolutions, linear layers, batch norms), in module order."""
    return [n for n, m in model.named_modules() if n and implicit_bias(m) is not None]


def _psi(t: torch.Tensor, per_channel: bool, size: tuple[int, int], eps: float = 1e-7) -> torch.Tensor:
    """FullGrad's post-processing of a (B, C, h, w) term: |t|, min-max to [0, 1] (per channel or per tensor),
    bilinear upsampling to ``size``, then the sum over channels: (B, H, W).

    Upsampling is linear and the same for every channel, so the channels are summed first and one map per image
    is upsampled (C times less work than upsampling each channel, the same numbers up to rounding)."""
    t = t.abs()
    dims = (2, 3) if per_channel else (1, 2, 3)
    t = t - t.amin(dim=dims, keepdim=True)
    t = (t / (t.amax(dim=dims, keepdim=True) + eps)).sum(1, keepdim=True)
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t[:, 0]


def fullgrad(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, batch_size: int | None = None,
             scope: str = "channel", normalize: bool = False) -> Explanation:
    """FullGrad (Srinivas & Fleuret 2019): |input-gradient x input| plus |bias x bias-gradient| of every
    convolution and batch norm, each rescaled to [0, 1], upsampled and summed.

    ``scope="channel"`` rescales each channel of each term on its own (the paper's Eq. 5 sums psi over
    channels; pytorch-grad-cam's ``FullGrad`` also does this, for the input term's colour channels too);
    ``"layer"`` rescales each term as a whole (the authors' code). Gradients are taken at every biased
    layer's output in one backward pass. ``extras["completeness"]`` holds <grad_x f, x> + the sum of all bias
    terms (linear layers included) per image: equal to the explained score for a network of linear pieces
    (ReLU, max-pool, linear, conv, eval batch norm), which ``extras["completeness_gap"]`` measures.
    """
    if scope not in ("channel", "layer"):
        raise ValueError(f"scope must be 'channel' or 'layer', got {scope!r}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    n = x.shape[0]
    names = bias_layers(model)
    modules = dict(model.named_modules())
    biases = {nm: implicit_bias(modules[nm]) for nm in names}
    size = tuple(x.shape[-2:])
    maps_all, idx_all, scores_all, outs, complete = [], [], [], [], []
    spatial_layers = 0
    for sl in chunks(n, batch_size):
        xi = x[sl].clone().requires_grad_(True)
        with capture(model, names, grad=True) as rec:
            out = model(xi)
            check_finite(out)
            t = split_target(target, sl)
            idx = target_indices(out, t)
            scores = target_scores(out, t, idx)
            acts = [rec.raw(nm) for nm in names if nm in rec.activations]
            used = [nm for nm in names if nm in rec.activations]
            grads = torch.autograd.grad(scores.sum(), [xi] + acts, allow_unused=True)
        gx = grads[0] if grads[0] is not None else torch.zeros_like(xi)
        total = (gx * xi.detach()).flatten(1).sum(1).double()
        sal = _psi(gx * xi.detach(), scope == "channel", size)
        spatial_layers = 0
        for nm, a, g in zip(used, acts, grads[1:]):
            if g is None:
                continue
            bias = biases[nm].to(g.dtype).view((1, -1) + (1,) * (g.dim() - 2))
            term = bias * g
            total = total + term.flatten(1).sum(1).double()
            if term.dim() == 4:
                sal = sal + _psi(term, scope == "channel", size)
                spatial_layers += 1
        maps_all.append(sal.detach())
        complete.append(total)
        scores_all.append(scores.detach())
        outs.append(out.detach() if isinstance(out, torch.Tensor) else out)
        if idx is not None:
            idx_all.append(idx)
    maps = torch.cat(maps_all)
    if normalize:
        from interpretorch.explanation import normalize_maps

        maps = normalize_maps(maps)
    scores = torch.cat(scores_all)
    completeness = torch.cat(complete)
    return Explanation(maps=maps, method="fullgrad", target=torch.cat(idx_all) if idx_all else None, scores=scores,
                       outputs=tensor_outputs(concat_outputs(outs)),
                       extras={"completeness": completeness, "completeness_gap": completeness - scores.double(),
                               "bias_layers": spatial_layers, "scope": scope})


register("fullgrad", fullgrad, kind="region", aliases=("full-grad", "full_grad"))
