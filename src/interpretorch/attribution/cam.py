"""Activation x gradient class activation maps, all from one forward and one backward pass."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import check_inputs, chunks, resolve_layer, split_target
from interpretorch.capture import capture
from interpretorch.explanation import Explanation, normalize_maps, upsample
from interpretorch.targets import Target, check_finite, target_indices, target_scores

EPS = 1e-7


def _gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)


def _gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # Chattopadhyay et al. 2018, eq. 19 with the exponential of the score: the second and third
    # derivatives become powers of the first.
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    w = (alpha * F.relu(g)).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(1)


def _xgradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    w = (g * a).sum(dim=(2, 3), keepdim=True) / (a.sum(dim=(2, 3), keepdim=True) + EPS)
    return (w * a).sum(1)


def _layercam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (F.relu(g) * a).sum(1)


def _hirescam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g * a).sum(1)


def _eigencam(a: torch.Tensor) -> torch.Tensor:
    """First principal component of the (centred) activations, signed to agree with their mean.

    The projection X v1 equals s1 u1, so it is read off the top eigenvector of the smaller of the two
    Gram matrices (HW x HW or C x C) instead of a full SVD.
    """
    b, c, h, w = a.shape
    x = a.permute(0, 2, 3, 1).reshape(b, h * w, c).double()
    x = x - x.mean(dim=1, keepdim=True)
    if h * w <= c:
        evals, evecs = torch.linalg.eigh(x @ x.transpose(1, 2))  # ascending eigenvalues
        proj = evecs[:, :, -1] * evals[:, -1:].clamp_min(0).sqrt()
    else:
        _, evecs = torch.linalg.eigh(x.transpose(1, 2) @ x)
        proj = (x @ evecs[:, :, -1:]).squeeze(-1)
    ref = a.sum(1).reshape(b, h * w).double()
    sign = torch.sign(((proj - proj.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign[:, None]).reshape(b, h, w).to(a.dtype)


GRADIENT_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": _gradcam,
    "gradcam++": _gradcampp,
    "xgradcam": _xgradcam,
    "layercam": _layercam,
    "hirescam": _hirescam,
}
ACTIVATION_METHODS = ("cam", "eigencam")
CAM_METHODS = tuple(GRADIENT_RULES) + ACTIVATION_METHODS


def find_classifier(model: nn.Module, channels: int, fc: str | nn.Module | None = None) -> nn.Linear:
    """Return the final linear layer reading ``channels`` pooled features (for CAM)."""
    from interpretorch.models.layers import get_layer

    if fc is not None:
        lin = get_layer(model, fc) if isinstance(fc, str) else fc
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        lin = linears[-1] if linears else None
    if not isinstance(lin, nn.Linear) or lin.in_features != channels:
        found = "no linear layer" if lin is None else \
            f"{type(lin).__name__} with in_features={getattr(lin, 'in_features', '?')}"
        raise ValueError("CAM needs a model that ends in global average pooling followed by one linear layer "
                         f"reading the layer's {channels} channels; found {found}. "
                         "Pass fc='name' or use Grad-CAM (identical up to scale for such models)")
    return lin


def _cam_maps(a: torch.Tensor, weight: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
    if idx is None:
        raise ValueError("CAM needs class indices; a callable target is not supported (use Grad-CAM)")
    w = weight.detach()[idx].to(a.dtype)  # (B, C)
    return torch.einsum("bc,bchw->bhw", w, a)


def layer_cams(model: nn.Module, inputs: torch.Tensor, methods: Sequence[str] | str = ("gradcam",),
               target: Target = "top1", layer: str | nn.Module | None = None, *,
               batch_size: int | None = None, relu: bool = True, normalize: bool = False,
               fc: str | nn.Module | None = None) -> dict[str, Explanation]:
    """Compute several CAMs (gradcam, gradcam++, xgradcam, layercam, hirescam, cam, eigencam) from one pass.

    Every requested method shares a single forward and (when any needs gradients) a single
    backward pass to ``layer`` per chunk of ``batch_size`` images.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in CAM_METHODS]
    if unknown:
        raise ValueError(f"unknown CAM method(s) {unknown}; available: {', '.join(CAM_METHODS)}")
    x = check_inputs(model, inputs)
    name = resolve_layer(model, layer, x)
    need_grad = any(m in GRADIENT_RULES for m in methods)
    raws: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    idx_all: list[torch.Tensor] = []
    scores_all: list[torch.Tensor] = []
    n = x.shape[0]
    for sl in chunks(n, batch_size):
        with capture(model, name, grad=need_grad) as rec:
            out = model(x[sl])
            check_finite(out)
            t = split_target(target, sl, n)
            idx = target_indices(out, t)
            scores = target_scores(out, t, idx)
            a = rec[name]
            if a.dim() != 4:
                raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; CAMs need a (B, C, H, W) output")
            g = rec.gradients(scores)[name] if need_grad else None
        a = a.detach()
        for m in methods:
            if m in GRADIENT_RULES:
                r = GRADIENT_RULES[m](a, g)
            elif m == "cam":
                r = _cam_maps(a, find_classifier(model, a.shape[1], fc).weight, idx)
            else:
                r = _eigencam(a)
            raws[m].append(r)
        if idx is not None:
            idx_all.append(idx)
        scores_all.append(scores.detach())
    size = tuple(x.shape[-2:])
    idx_cat = torch.cat(idx_all) if idx_all else None
    score_cat = torch.cat(scores_all)
    result = {}
    for m in methods:
        raw = torch.cat(raws[m])
        if relu:
            raw = F.relu(raw)
        maps = upsample(raw, size)
        if normalize:
            maps = normalize_maps(maps)
        result[m] = Explanation(maps=maps, method=m, target=idx_cat, layer=name, raw=raw, scores=score_cat)
    return result
