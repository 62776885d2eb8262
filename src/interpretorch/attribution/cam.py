"""Class activation maps: each CAM is only its weighting rule on (activations, gradients), and every CAM requested
together shares one forward and one backward pass to the layer.

Adding a CAM is one decorated rule: ``@cam_rule("name")`` is ``register(name, ..., group="cam")`` plus the rule
the shared pass applies, so there is one way to add a method and the decorator is its CAM shorthand. A CAM that
is not a weighting rule on (activations, gradients) (Score-CAM, Ablation-CAM, ...) calls ``register`` itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.common import finish_region, method_inputs, resolve_layer
from interpretorch.attribution.registry import register, register_group
from interpretorch.capture import capture, token_grid
from interpretorch.core.batching import chunks
from interpretorch.core.targets import (TARGET_KINDS, Target, check_finite, concat_outputs, split_target,
                                        target_indices, target_scores, tensor_outputs)
from interpretorch.explanation import Explanation
from interpretorch.models.layers import get_layer

EPS = 1e-7


def find_classifier(model: nn.Module, channels: int, fc: str | nn.Module | None = None) -> nn.Linear:
    """Return the final linear layer reading ``channels`` pooled features (for CAM)."""
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


@dataclass(frozen=True)
class CamRule:
    """A CAM's weighting rule ``fn(activations, gradients, context) -> (B, h, w)`` and whether it needs gradients."""

    fn: Callable[[torch.Tensor, torch.Tensor | None, SimpleNamespace], torch.Tensor]
    uses_gradients: bool = True


CAM_RULES: dict[str, CamRule] = {}


def cam_rule(name: str, *, aliases: Sequence[str] = (), uses_gradients: bool = True, default: bool = False,
             class_agnostic: bool = False, targets: Sequence[str] = TARGET_KINDS,
             targets_note: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(a, g, ctx)`` as the CAM ``name``, a region method of the shared CAM pass.

    ``a`` and ``g`` are the layer's (B, C, h, w) activations and the target's gradients there (None
    when ``uses_gradients`` is False); ``ctx`` has ``model``, ``idx`` (class per image or None) and ``fc``;
    ``class_agnostic``: the rule ignores the target (reports say so instead of naming a class).
    """
    def decorate(fn: Callable) -> Callable:
        # register first: a refused name (already taken) leaves no rule behind
        register(name, _single_cam(name), kind="region", needs_layer=True, aliases=aliases, group="cam",
                 default=default, doc=(fn.__doc__ or "").strip().split("\n")[0], class_agnostic=class_agnostic,
                 targets=targets, targets_note=targets_note)
        CAM_RULES[name] = CamRule(fn, uses_gradients)
        return fn
    return decorate


def _single_cam(method: str) -> Callable[..., Explanation]:
    """The registered function of one CAM: the shared pass asked for that CAM alone."""
    def fn(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", layer: str | nn.Module | None = None,
           *, batch_size: int | None = None, relu: bool = True, normalize: bool = False,
           fc: str | nn.Module | None = None, reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
           prefix_tokens: int | None = None) -> Explanation:
        return layer_cams(model, inputs, [method], target, layer, batch_size=batch_size, relu=relu,
                          normalize=normalize, fc=fc, reshape=reshape, prefix_tokens=prefix_tokens)[method]
    fn.__name__ = fn.__qualname__ = method.replace("+", "p")
    fn.__doc__ = f"{method} on its own (the shared CAM pass asked for this CAM alone)."
    return fn


@cam_rule("gradcam", aliases=("grad-cam",), default=True)
def gradcam_rule(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially averaged gradient."""
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)


@cam_rule("gradcam++", aliases=("gradcampp", "grad-cam++"), default=True)
def _gradcampp(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018): positive gradients weighted per pixel by alpha."""
    # Eq. 19 with the exponential of the score: the second and third derivatives become powers of the first.
    g2, g3 = g.pow(2), g.pow(3)
    denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g))
    w = (alpha * F.relu(g)).sum(dim=(2, 3), keepdim=True)
    return (w * a).sum(1)


@cam_rule("xgradcam", aliases=("x-grad-cam",), default=True)
def _xgradcam(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): channels weighted by activation-normalised gradient x activation."""
    w = (g * a).sum(dim=(2, 3), keepdim=True) / (a.sum(dim=(2, 3), keepdim=True) + EPS)
    return (w * a).sum(1)


@cam_rule("layercam", aliases=("layer-cam",), default=True)
def _layercam(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): activations weighted per pixel by their positive gradient."""
    return (F.relu(g) * a).sum(1)


@cam_rule("hirescam", aliases=("hires-cam",), default=True)
def _hirescam(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): the element-wise product of gradients and activations."""
    return (g * a).sum(1)


@cam_rule("cam", uses_gradients=False, targets=("class",),
          targets_note="its map is the linear classifier's weights of one class")
def _cam(a: torch.Tensor, g: None, ctx: SimpleNamespace) -> torch.Tensor:
    """CAM (Zhou et al. 2016): the final linear layer's class weights applied to the layer's channels."""
    if ctx.idx is None:
        raise ValueError("CAM needs class indices; a callable target is not supported (use Grad-CAM)")
    weight = find_classifier(ctx.model, a.shape[1], ctx.fc).weight
    return torch.einsum("bc,bchw->bhw", weight.detach()[ctx.idx].to(a.dtype), a)


@cam_rule("eigencam", aliases=("eigen-cam",), uses_gradients=False, default=True, class_agnostic=True)
def eigencam_rule(a: torch.Tensor, g: None = None, ctx: SimpleNamespace | None = None) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the activations (class-agnostic).

    The projection X v1 equals s1 u1, so it is read off the top eigenvector of the smaller of the two
    Gram matrices (HW x HW or C x C) instead of a full SVD; signed to agree with the activations' mean.
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


def check_cam_activation(a: torch.Tensor, name: str) -> None:
    """Raise a ValueError naming layer ``name`` when its (laid out) output is not a (B, C, H, W) map of more than
    one cell, the input every CAM rule reads."""
    if a.dim() != 4:
        raise ValueError(f"layer {name!r} gives shape {tuple(a.shape)}; CAMs need a (B, C, H, W) output "
                         "or (B, T, C) tokens")
    if a.shape[2] * a.shape[3] == 1:
        raise ValueError(f"layer {name!r} gives 1x1 maps {tuple(a.shape)}, so every CAM would be constant; "
                         "choose a layer with a spatial output (`interpretorch layers` lists them)")


def layer_cams(model: nn.Module, inputs: torch.Tensor, methods: Sequence[str] | str = ("gradcam",),
               target: Target = "top1", layer: str | nn.Module | None = None, *,
               batch_size: int | None = None, relu: bool = True, normalize: bool = False,
               fc: str | nn.Module | None = None, reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
               prefix_tokens: int | None = None) -> dict[str, Explanation]:
    """Compute several CAMs (gradcam, gradcam++, xgradcam, layercam, hirescam, cam, eigencam, ...) from one pass.

    Every requested CAM shares a single forward and (when any needs gradients) a single backward
    pass to ``layer`` per ``batch_size`` images. ``layer`` may name a module's output, a member of a
    tuple / dict output ("blocks.3.attn:0") or an input; token outputs (B, T, C) are laid out as a
    patch grid (``capture.token_grid``: class / register tokens dropped, ``prefix_tokens`` of them
    when given, else inferred), or by ``reshape`` when given.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in methods if m not in CAM_RULES]
    if unknown:
        raise ValueError(f"unknown CAM method(s) {unknown}; available: {', '.join(CAM_RULES)}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    n = x.shape[0]
    name = resolve_layer(model, layer, x)
    size = tuple(x.shape[-2:])
    layout = reshape if reshape is not None else token_grid(size, prefix_tokens)
    need_grad = any(CAM_RULES[m].uses_gradients for m in methods)
    raws: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    idx_all: list[torch.Tensor] = []
    scores_all: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []
    for sl in chunks(n, batch_size):
        with capture(model, name, grad=need_grad, reshape=layout) as rec:
            out = model(x[sl])
            check_finite(out)
            t = split_target(target, sl)
            idx = target_indices(out, t)
            scores = target_scores(out, t, idx)
            a = rec[name]
            check_cam_activation(a, name)
            g = rec.gradients(scores)[name] if need_grad else None
        a = a.detach()
        ctx = SimpleNamespace(model=model, idx=idx, fc=fc)
        for m in methods:
            rule = CAM_RULES[m]
            raws[m].append(rule.fn(a, g if rule.uses_gradients else None, ctx))
        if idx is not None:
            idx_all.append(idx)
        scores_all.append(scores.detach())
        outs.append(out)
    idx_cat = torch.cat(idx_all) if idx_all else None
    score_cat = torch.cat(scores_all)
    out_cat = tensor_outputs(concat_outputs(outs))
    result = {}
    for m in methods:
        raw, maps = finish_region(torch.cat(raws[m]), size, relu, normalize)
        result[m] = Explanation(maps=maps, method=m, target=idx_cat, layer=name, raw=raw, scores=score_cat,
                                outputs=out_cat)
    return result


register_group("cam", layer_cams)


# --- pytorch-grad-cam's remaining one-pass CAMs (issue 18) ---------------------------------------------------------

@cam_rule("eigengradcam", aliases=("eigen-grad-cam",))
def _eigengradcam(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace) -> torch.Tensor:
    """EigenGradCAM (pytorch-grad-cam): the first principal component of gradient x activation.

    Signed, like Eigen-CAM here, to agree with the channel sum of gradient x activation (HiResCAM); a
    plain SVD's sign is arbitrary (pytorch-grad-cam keeps whatever the SVD gives, so its map may be the
    negated one, which the ReLU then empties).
    """
    return eigencam_rule(g * a)


@cam_rule("gradcam_elementwise", aliases=("gradcamelementwise", "grad-cam-elementwise"))
def _gradcam_elementwise(a: torch.Tensor, g: torch.Tensor, ctx: SimpleNamespace) -> torch.Tensor:
    """Grad-CAM element-wise (pytorch-grad-cam): the channel sum of ReLU(gradient x activation)."""
    return F.relu(g * a).sum(1)


FEM_K = 2.0


@cam_rule("fem", uses_gradients=False, class_agnostic=True)
def _fem(a: torch.Tensor, g: None, ctx: SimpleNamespace) -> torch.Tensor:
    """FEM (Fuad et al. 2020): channels weighted by the share of their cells above mean + 2 std (class-agnostic).

    The threshold is each channel's mean plus ``FEM_K`` = 2 population standard deviations over its
    cells (the k-sigma rule of the paper and pytorch-grad-cam's default k=2).
    """
    flat = a.flatten(2)
    th = flat.mean(-1, keepdim=True) + FEM_K * flat.std(-1, correction=0, keepdim=True)
    w = (flat > th).to(a.dtype).mean(-1)
    return torch.einsum("bc,bchw->bhw", w, a)


def kernel_pca_projection(a: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None,
                          coef0: float = 1.0, degree: int = 3) -> torch.Tensor:
    """The first kernel principal component of each image's cells: (B, C, h, w) -> (B, h, w).

    Cells are the samples and channels the features (centred over cells); the kernel is "sigmoid"
    (tanh(gamma <x, y> + coef0)), "rbf", "poly", "linear" or "cosine" with scikit-learn's defaults
    (gamma = 1 / C); the component is the top eigenvector of the centred kernel matrix times the
    square root of its eigenvalue (scikit-learn's ``KernelPCA.fit_transform``). Signed to agree with the
    activations' channel sum, like Eigen-CAM.
    """
    b, c, h, w = a.shape
    x = a.permute(0, 2, 3, 1).reshape(b, h * w, c).double()
    x = x - x.mean(dim=1, keepdim=True)
    gamma = 1.0 / c if gamma is None else float(gamma)
    dot = x @ x.transpose(1, 2)
    if kernel == "sigmoid":
        k = torch.tanh(gamma * dot + coef0)
    elif kernel == "linear":
        k = dot
    elif kernel == "poly":
        k = (gamma * dot + coef0) ** degree
    elif kernel == "rbf":
        sq = dot.diagonal(dim1=1, dim2=2)
        k = torch.exp(-gamma * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp_min(0))
    elif kernel == "cosine":
        nrm = x.norm(dim=2).clamp_min(1e-12)
        k = dot / (nrm[:, :, None] * nrm[:, None, :])
    else:
        raise ValueError(f"unknown kernel {kernel!r}; choose sigmoid, rbf, poly, linear or cosine")
    k = k - k.mean(1, keepdim=True) - k.mean(2, keepdim=True) + k.mean(dim=(1, 2), keepdim=True)
    evals, evecs = torch.linalg.eigh(k)
    proj = evecs[:, :, -1] * evals[:, -1:].clamp_min(0).sqrt()
    ref = a.sum(1).reshape(b, h * w).double()
    sign = torch.sign(((proj - proj.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign[:, None]).reshape(b, h, w).to(a.dtype)


@cam_rule("kpcacam", aliases=("kpca-cam", "kpca_cam"), uses_gradients=False, class_agnostic=True)
def _kpcacam(a: torch.Tensor, g: None, ctx: SimpleNamespace) -> torch.Tensor:
    """KPCA-CAM (Karmani et al. 2024): the first kernel principal component of the activations (class-agnostic).

    A sigmoid kernel with gamma = 1 / channels, pytorch-grad-cam's default (``kernel_pca_projection``
    takes the other kernels). Signed like Eigen-CAM, where scikit-learn fixes the sign by the largest
    entry (an arbitrary choice that can leave the ReLU'd map empty).
    """
    return kernel_pca_projection(a)


CAM_METHODS = tuple(CAM_RULES)
