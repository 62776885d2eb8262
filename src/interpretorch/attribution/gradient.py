"""Plain input gradients: Gradient (Saliency) and Gradient x Input, and the batched gradient pass the guided
methods share.

Maps are (B, C, H, W) (reduce them for display with ``Explanation.map2d(rule)`` or
``Explanation.visualize("abs_grayscale" | "diverging")``). The backward pass only goes to the input
(parameters are frozen while it runs), and the model is left exactly as it was.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from interpretorch.attribution.registry import register
from interpretorch.attribution.relu_rules import check_reach, relu_rule
from interpretorch.capture import capture
from interpretorch.core import check_inputs, rows_per_pass
from interpretorch.core.batching import chunks
from interpretorch.core.targets import (Target, check_finite, check_target, concat_outputs, split_target,
                                        target_indices, target_scores, tensor_outputs)
from interpretorch.explanation import Explanation


def input_grad(scores: torch.Tensor, rows: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
    """d(sum of scores) / d(rows), zeros where the scores do not depend on the rows."""
    if not scores.requires_grad:
        raise RuntimeError("the target scores do not depend on the inputs")
    (g,) = torch.autograd.grad(scores.sum(), rows, retain_graph=retain_graph, allow_unused=True)
    return torch.zeros_like(rows) if g is None else g


def grad_pass(model: nn.Module, x: torch.Tensor, target: Target, batch_size: int | None,
              rule: str | None = None, method: str = "gradient") -> tuple[torch.Tensor, Explanation]:
    """Gradients of the target scores w.r.t. the images, one forward and one backward per ``batch_size`` images
    (through the ReLU ``rule`` when given; the first forward is audited for activations the rule cannot
    reach); returns them with an Explanation holding targets, scores, outputs and the audit."""
    n = x.shape[0]
    target = check_target(target, n)
    batch_size = rows_per_pass(batch_size, x.device)
    grads, idx_all, scores_all, outs = [], [], [], []
    info: dict = {}
    with relu_rule(model, rule) if rule else contextlib.nullcontext() as state, capture(model, []):
        for k, sl in enumerate(chunks(n, batch_size)):
            rows = x[sl].clone().requires_grad_(True)
            if state is not None and k == 0:
                with state.audit():
                    out = model(rows.clone())  # a non-leaf copy: in-place first ops stay legal
                check_reach(state, method, model)
                info = {"relu_reached": state.reached, "relu_unreached": state.unreached}
            else:
                out = model(rows.clone())
            check_finite(out)
            t = split_target(target, sl)
            with state.pause() if state is not None else contextlib.nullcontext():  # the target is not the model
                idx = target_indices(out, t)
                s = target_scores(out, t, idx)
            grads.append(input_grad(s, rows))
            scores_all.append(s.detach())
            outs.append(out)
            if idx is not None:
                idx_all.append(idx)
    return torch.cat(grads), Explanation(maps=torch.empty(0), method=method,
                                         target=torch.cat(idx_all) if idx_all else None,
                                         scores=torch.cat(scores_all), extras=info,
                                         outputs=tensor_outputs(concat_outputs(outs)))


def gradient(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *, batch_size: int | None = None,
             abs: bool = False) -> Explanation:  # noqa: A002 - the name users know from Saliency
    """Gradient (Simonyan et al. 2014): d score / d input. ``abs=True`` gives the saliency |gradient|;
    Simonyan's map is ``explanation.map2d("max_abs")``."""
    x = check_inputs(model, inputs)
    g, e = grad_pass(model, x, target, batch_size)
    return Explanation(maps=g.abs() if abs else g, method="gradient", target=e.target, scores=e.scores,
                       outputs=e.outputs)


register("gradient", gradient, kind="pixel", aliases=("saliency", "vanilla_gradient", "grad"))


def gradient_x_input(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", *,
                     batch_size: int | None = None) -> Explanation:
    """Gradient x Input (Shrikumar et al. 2016): the first-order Taylor contribution of each input value."""
    x = check_inputs(model, inputs)
    g, e = grad_pass(model, x, target, batch_size)
    return Explanation(maps=g * x, method="gradient_x_input", target=e.target, scores=e.scores, outputs=e.outputs)


register("gradient_x_input", gradient_x_input, kind="pixel",
         aliases=("gradientxinput", "gradient*input", "gradxinput", "input_x_gradient", "inputxgradient"))
