"""Guided Backprop, Deconvnet and Guided Grad-CAM: gradients through modified ReLU rules."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.cam import gradcam_rule
from interpretorch.attribution.common import method_inputs, resolve_layer
from interpretorch.attribution.gradient import grad_pass, input_grad
from interpretorch.attribution.registry import register
from interpretorch.attribution.relu_rules import check_reach, relu_rule
from interpretorch.capture import capture
from interpretorch.core import check_inputs
from interpretorch.core.batching import chunks
from interpretorch.core.targets import (Target, check_finite, concat_outputs, split_target, target_indices,
                                        target_scores, tensor_outputs)
from interpretorch.explanation import Explanation, upsample

def guided_backprop(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                    batch_size: int | None = None) -> Explanation:
    """Guided Backpropagation (Springenberg et al. 2015): only positive gradients pass back through ReLUs
    whose input was positive.

    Applies to every ReLU-like activation computed in Python (nn.ReLU incl. in place, nn.ReLU6, F.relu,
    torch.clamp(x, 0, ...); see ``relu_rule``): raises when the model has none, warns when some run where
    no Python hook reaches them (TorchScript). ``extras`` counts ``relu_reached`` / ``relu_unreached``.
    """
    x = check_inputs(model, inputs)
    g, e = grad_pass(model, x, target, batch_size, rule="guided", method="guided_backprop")
    return Explanation(maps=g, method="guided_backprop", target=e.target, scores=e.scores, extras=e.extras,
                       outputs=e.outputs)


register("guided_backprop", guided_backprop, kind="pixel", aliases=("guidedbackprop", "gbp"))


def deconvnet(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
              batch_size: int | None = None) -> Explanation:
    """Deconvnet (Zeiler & Fergus 2014): ReLUs pass back the positive part of the gradient, ignoring the forward
    activation. Same reach, errors and warnings as ``guided_backprop``."""
    x = check_inputs(model, inputs)
    g, e = grad_pass(model, x, target, batch_size, rule="deconvnet", method="deconvnet")
    return Explanation(maps=g, method="deconvnet", target=e.target, scores=e.scores, extras=e.extras,
                       outputs=e.outputs)


register("deconvnet", deconvnet, kind="pixel", aliases=("deconv", "deconvolution"))


def guided_gradcam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                   layer: str | nn.Module | None = None, *, batch_size: int | None = None,
                   interpolate: str = "bilinear") -> Explanation:
    """Guided Grad-CAM (Selvaraju et al. 2017): Guided Backprop times the (ReLU'd) Grad-CAM map upsampled to the
    input.

    Both come from one forward pass per chunk: a first backward with the true ReLU derivatives gives
    Grad-CAM's gradients at ``layer``, a second through the same graph with the guided rule gives the
    input gradients. ``interpolate``: "bilinear" (as the CAMs here) or "nearest" (Captum's default).
    ``raw`` holds the layer-resolution Grad-CAM.
    """
    if interpolate not in ("bilinear", "nearest"):
        raise ValueError(f"interpolate must be 'bilinear' or 'nearest', got {interpolate!r}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    n = x.shape[0]
    name = resolve_layer(model, layer, x)
    grads, cams, idx_all, scores_all, outs = [], [], [], [], []
    for k, sl in enumerate(chunks(n, batch_size)):
        with relu_rule(model, "standard") as rule, capture(model, name) as rec:
            rows = x[sl].clone().requires_grad_(True)
            if k == 0:
                with rule.audit():
                    out = model(rows.clone())  # a non-leaf copy: in-place first ops stay legal
                check_reach(rule, "guided_gradcam", model)
            else:
                out = model(rows.clone())
            check_finite(out)
            t = split_target(target, sl)
            with rule.pause():
                idx = target_indices(out, t)
                s = target_scores(out, t, idx)
            a = rec[name]
            if a.dim() != 4:
                raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; Grad-CAM needs a (B, C, H, W) output")
            ga = rec.gradients(s, retain_graph=True)[name]
            rule.mode = "guided"
            grads.append(input_grad(s, rows))
        cams.append(F.relu(gradcam_rule(a.detach(), ga)))
        scores_all.append(s.detach())
        outs.append(out)
        if idx is not None:
            idx_all.append(idx)
    raw = torch.cat(cams)
    size = tuple(x.shape[-2:])
    up = upsample(raw, size) if interpolate == "bilinear" else F.interpolate(raw[:, None], size=size)[:, 0]
    return Explanation(maps=torch.cat(grads) * up[:, None], method="guided_gradcam",
                       target=torch.cat(idx_all) if idx_all else None, layer=name, raw=raw,
                       scores=torch.cat(scores_all),
                       outputs=tensor_outputs(concat_outputs(outs)))


register("guided_gradcam", guided_gradcam, kind="pixel", needs_layer=True,
         aliases=("guidedgradcam", "guided_grad_cam"))
