"""Many targets of ONE image from one forward pass of it: the path ``explain_targets`` takes for the methods that
read only the layer's activation and each target's gradient there (the CAMs of the shared CAM pass), or each
target's input gradient (Gradient, Gradient x Input).

All K targets (every detection of the image, every class region) score the image's one output row; the image runs
forward once, then one backward pass per target goes back to the layer (or the input) only, and the CAM rules of
:mod:`interpretorch.attribution.cam` read (the activation repeated K times, the K gradients), as they read K rows
of the shared CAM pass. A CAM that needs no gradient (Eigen-CAM) needs only the forward. Rows counted on the
progress sink (and by ``registry.explain_targets_rows``): 1 for the forward, then 1 per backward pass.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Callable, Sequence

import torch
from torch import nn

from interpretorch.attribution.cam import CAM_RULES, check_cam_activation
from interpretorch.attribution.common import finish_region, resolve_layer
from interpretorch.attribution.registry import register_one_forward
from interpretorch.capture import capture, token_grid
from interpretorch.core import check_inputs
from interpretorch.core.progress import advance
from interpretorch.core.target_objects import output_rows
from interpretorch.core.targets import (BoundTargets, Target, check_finite, target_indices, target_scores,
                                        tensor_outputs)
from interpretorch.explanation import Explanation

__all__ = ["one_image_scores", "per_target_gradients", "one_forward_cams", "one_forward_gradients",
           "cams_need_gradients"]


def one_image_scores(outputs: object, target: Target) -> tuple[torch.Tensor, torch.Tensor]:
    """The K targets' scores on ONE image's outputs (every target scores output row 0), and what an Explanation
    records as each target: its index j among the bound target objects (as K rows would be routed), or its class
    (a (K,) tensor of class indices)."""
    if output_rows(outputs) != 1:
        raise ValueError(f"one image's outputs are needed, got {output_rows(outputs)} rows")
    if isinstance(target, BoundTargets):
        ids = target.image_ids(len(target)).tolist()
        for i in ids:
            if i not in target.memo:  # what the target reads from the unperturbed output (a chosen detection)
                target.memo[i] = target.targets[i].prepare(outputs, 0)
        scores = torch.cat([target.targets[i].score_rows(outputs, [0], [target.memo[i]]).reshape(1) for i in ids])
        return scores, torch.as_tensor(ids, dtype=torch.long, device=scores.device)
    if isinstance(target, torch.Tensor):
        k = target.numel()
        rows = outputs.expand(k, *outputs.shape[1:]) if isinstance(outputs, torch.Tensor) else outputs
        idx = target_indices(rows, target)
        return target_scores(rows, target, idx), idx
    raise TypeError(f"one forward pass explains bound target objects or class indices, got {type(target).__name__}")


def per_target_gradients(scores: torch.Tensor, wrt: torch.Tensor) -> torch.Tensor:
    """d scores[j] / d ``wrt`` for each target j, concatenated along the batch: one backward pass per target (to
    ``wrt`` only), each counted as one row on the progress sink."""
    if not scores.requires_grad:
        raise RuntimeError("the target scores do not depend on the explained layer or input")
    k = int(scores.shape[0])
    grads = []
    for j in range(k):
        (g,) = torch.autograd.grad(scores[j], wrt, retain_graph=j < k - 1, allow_unused=True)
        grads.append(torch.zeros_like(wrt) if g is None else g)
        advance(1)
    return torch.cat(grads)


def _rows(outputs: object, k: int) -> torch.Tensor | None:
    """The one image's tensor outputs as the K rows an Explanation of K targets holds (None for other outputs)."""
    t = tensor_outputs(outputs)
    return None if t is None else t.expand(k, *t.shape[1:]).clone()


def cams_need_gradients(methods: Sequence[str]) -> bool:
    """Whether any of these CAMs reads the target's gradient (then each target costs one backward pass)."""
    return any(CAM_RULES[m].uses_gradients for m in methods)


def one_forward_cams(model: nn.Module, image: torch.Tensor, methods: Sequence[str], target: Target,
                     layer: str | nn.Module | None = None, *, relu: bool = True, normalize: bool = False,
                     fc: str | nn.Module | None = None, reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     prefix_tokens: int | None = None) -> dict[str, Explanation]:
    """CAMs of K targets of one image (1, C, H, W) from one forward pass and one backward pass per target to
    ``layer``; the same maps, options and fields as the shared CAM pass on K copies of the image."""
    unknown = [m for m in methods if m not in CAM_RULES]
    if unknown:
        raise ValueError(f"unknown CAM method(s) {unknown}; available: {', '.join(CAM_RULES)}")
    x = check_inputs(model, image)
    name = resolve_layer(model, layer, x)
    size = tuple(x.shape[-2:])
    layout = reshape if reshape is not None else token_grid(size, prefix_tokens)
    need_grad = cams_need_gradients(methods)
    with capture(model, name, grad=need_grad, reshape=layout) as rec:
        out = model(x)
        check_finite(out)
        scores, idx = one_image_scores(out, target)
        a = rec[name]
        check_cam_activation(a, name)
        advance(1)
        g = layout(per_target_gradients(scores, rec.raw(name))) if need_grad else None
    k = int(scores.shape[0])
    a = a.detach().expand(k, *a.shape[1:])
    ctx = SimpleNamespace(model=model, idx=idx, fc=fc)
    outputs = _rows(out, k)
    result = {}
    for m in methods:
        rule = CAM_RULES[m]
        raw, maps = finish_region(rule.fn(a, g if rule.uses_gradients else None, ctx), size, relu, normalize)
        result[m] = Explanation(maps=maps, method=m, target=idx, layer=name, raw=raw, scores=scores.detach(),
                                outputs=outputs)
    return result


def one_forward_gradients(model: nn.Module, image: torch.Tensor, methods: Sequence[str], target: Target,
                          layer: str | nn.Module | None = None, *,
                          abs: bool = False) -> dict[str, Explanation]:  # noqa: A002 - Gradient's own option
    """Gradient and Gradient x Input of K targets of one image (1, C, H, W) from one forward pass and one backward
    pass per target to the input; ``abs`` is Gradient's option (the saliency |gradient|)."""
    unknown = [m for m in methods if m not in ("gradient", "gradient_x_input")]
    if unknown:
        raise ValueError(f"the one-forward gradient pass computes gradient and gradient_x_input, not {unknown}")
    x = check_inputs(model, image)
    with capture(model, []):  # the model frozen: gradients reach the input only
        rows = x.clone().requires_grad_(True)
        out = model(rows.clone())  # a non-leaf copy: in-place first ops stay legal
        check_finite(out)
        scores, idx = one_image_scores(out, target)
        advance(1)
        g = per_target_gradients(scores, rows)
    outputs = _rows(out, int(scores.shape[0]))
    result = {}
    for m in methods:
        maps = (g.abs() if abs else g) if m == "gradient" else g * x
        result[m] = Explanation(maps=maps, method=m, target=idx, scores=scores.detach(), outputs=outputs)
    return result


def _always(methods: Sequence[str]) -> bool:
    return True


register_one_forward(one_forward_cams, cams_need_gradients, group="cam")
register_one_forward(one_forward_gradients, _always, methods=("gradient", "gradient_x_input"))
