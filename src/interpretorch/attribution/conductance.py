"""Hidden-unit attributions along the straight path from a baseline to the input: layer conductance (Dhamdhere et
al. 2018), internal influence (Leino et al. 2018), and the neuron-level gradient, Integrated Gradients and
conductance, which explain one unit of a layer (a channel, or one element of it) instead of a class.

Rows are interpolation steps of the images, step-major (row r = (step r // B, image r % B)), ``batch_size`` per
model call. ``neuron``: a channel index (the unit is the sum of the channel over its positions, as dissection's
units are), a tuple indexing one element of the layer's output without the batch dimension, or None (each
image's channel with the largest mean activation).
"""
from __future__ import annotations

import torch
from torch import nn

from interpretorch.attribution.common import clean_pass, finish_region, method_inputs, resolve_layer, row_scores
from interpretorch.attribution.folded import folded_model
from interpretorch.attribution.integrated import ig_baseline, ig_quadrature
from interpretorch.attribution.layout import in_layout, row_layout
from interpretorch.attribution.registry import register
from interpretorch.core.batching import chunks
from interpretorch.capture import capture
from interpretorch.explanation import Explanation
from interpretorch.core.targets import Target, check_finite, tensor_outputs

Neuron = int | tuple[int, ...] | None


def _unit_mask(a: torch.Tensor, neuron: Neuron, chosen: torch.Tensor | None, i: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask over the layer output ``a`` (rows of images ``i``) selecting each row's unit."""
    mask = torch.zeros_like(a)
    if neuron is None:
        mask[torch.arange(len(i), device=a.device), chosen[i]] = 1
    elif isinstance(neuron, int):
        mask[:, neuron] = 1
    else:
        mask[(slice(None),) + tuple(neuron)] = 1
    return mask


def _fresh(rec) -> None:
    """Forget the calls counted by a capture, so that one capture serves several forward passes."""
    rec.calls.clear()


def _check_neuron(neuron: Neuron, shape: tuple[int, ...]) -> None:
    if neuron is None:
        return
    if isinstance(neuron, bool) or not isinstance(neuron, (int, tuple)):
        raise TypeError(f"neuron must be a channel index, a tuple of indices or None, got {neuron!r}")
    idx = (neuron,) if isinstance(neuron, int) else neuron
    if len(idx) > len(shape) or not all(isinstance(k, int) and 0 <= k < n for k, n in zip(idx, shape)):
        raise ValueError(f"neuron {neuron!r} is not a unit of the layer's output of shape {tuple(shape)} (without "
                         "the batch dimension)")


def _layer_shape_and_choice(model: nn.Module, x: torch.Tensor, name: str, neuron: Neuron, batch_size: int
                            ) -> tuple[tuple[int, ...], torch.Tensor | None]:
    """The layer output's shape (without batch) and, for ``neuron=None``, each image's most active channel (a
    given unit needs only the shape: one row)."""
    acts = []
    with capture(model, [name], grad=False) as rec:
        for sl in chunks(x.shape[0] if neuron is None else 1, batch_size):
            _fresh(rec)
            model(x[sl])
            a = rec.raw(name)
            acts.append(a.reshape(a.shape[0], a.shape[1], -1).mean(2).argmax(1) if neuron is None else None)
            shape = tuple(a.shape[1:])
    _check_neuron(neuron, shape)
    return shape, (torch.cat(acts) if neuron is None else None)


def _path(x: torch.Tensor, baseline, blur_sigma: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    base = ig_baseline(baseline, x, blur_sigma=blur_sigma, seed=seed)
    return base, x - base


def layer_conductance(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                      layer: str | nn.Module | None = None, *, baseline: str | float | torch.Tensor = "zeros",
                      steps: int = 50, method: str = "gausslegendre", relu: bool = False, normalize: bool = False,
                      blur_sigma: float = 10.0, seed: int = 0, batch_size: int | None = None) -> Explanation:
    """Layer conductance (Dhamdhere et al. 2018): how much of the target's change from the baseline flows
    through each unit of ``layer``: the sum over the path of d score / d unit times the unit's change.

    Captum's discretisation: ``steps`` + 1 points of the quadrature ``method``, the gradient at each point times
    the unit's change to the next. ``extras["layer_attributions"]`` holds the (B, C, h, w) conductances; the map
    is their sum over channels (``raw``) upsampled to the input. A row is one point of one image's path.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    model = folded_model(model, x, keep=name)  # BatchNorms folded on the CPU, the layer's own kept
    base, diff = _path(x, baseline, blur_sigma, seed)
    alphas, _ = ig_quadrature(steps + 1, method)
    b = x.shape[0]
    idx, out = clean_pass(model, x, target, batch_size)
    layout = row_layout(model, x)
    total = prev_g = prev_a = None
    with capture(model, [name]) as rec:
        for sl in chunks((steps + 1) * b, batch_size):
            r = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = r // b, r % b
            rows = in_layout(base[i] + torch.as_tensor(alphas, dtype=x.dtype, device=x.device)[k].view(-1, 1, 1, 1)
                             * diff[i], layout)
            _fresh(rec)
            o = model(rows)  # no gradient below the layer: the capture makes its output the leaf
            check_finite(o, "outputs on interpolated inputs")
            s = row_scores(o, target, None if idx is None else idx[i])
            a = rec.raw(name)
            (g,) = torch.autograd.grad(s.sum(), a)
            a, g = a.detach().double(), g.double()
            if total is None:
                total = torch.zeros((b,) + tuple(a.shape[1:]), dtype=torch.float64, device=x.device)
                prev_g, prev_a = torch.zeros_like(total), torch.zeros_like(total)
            for step in torch.unique(k).tolist():  # in order: step k - 1 of an image always came before step k
                sel = k == step
                ii = i[sel]
                if step > 0:
                    total[ii] += prev_g[ii] * (a[sel] - prev_a[ii])
                prev_g[ii], prev_a[ii] = g[sel], a[sel]
    layer_attr = total.to(x.dtype)
    raw, maps = finish_region(layer_attr.sum(1), tuple(x.shape[-2:]), relu, normalize)
    return Explanation(maps=maps, method="layer_conductance", target=idx, layer=name, raw=raw,
                       scores=row_scores(out, target, idx),
                       extras={"layer_attributions": layer_attr, "steps": steps, "integration": method,
                               "forward_backward_passes": (steps + 1) * b}, outputs=tensor_outputs(out))


register("layer_conductance", layer_conductance, kind="region", needs_layer=True, aliases=("conductance",),
         doc="Layer conductance (Dhamdhere et al. 2018), 50 steps; a row is one point of one image's path")


def internal_influence(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                       layer: str | nn.Module | None = None, *, baseline: str | float | torch.Tensor = "zeros",
                       steps: int = 50, method: str = "gausslegendre", relu: bool = False, normalize: bool = False,
                       blur_sigma: float = 10.0, seed: int = 0, batch_size: int | None = None) -> Explanation:
    """Internal influence (Leino et al. 2018): the gradient of the target score with respect to each unit of
    ``layer``, averaged over the straight path from the baseline to the input (quadrature ``method``).

    ``extras["layer_attributions"]`` holds the (B, C, h, w) influences; the map is their sum over channels.
    A row is one point of one image's path.
    """
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    model = folded_model(model, x, keep=name)  # BatchNorms folded on the CPU, the layer's own kept
    base, diff = _path(x, baseline, blur_sigma, seed)
    alphas, weights = ig_quadrature(steps, method)
    b = x.shape[0]
    idx, out = clean_pass(model, x, target, batch_size)
    layout = row_layout(model, x)
    total = None
    with capture(model, [name]) as rec:
        for sl in chunks(steps * b, batch_size):
            r = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = r // b, r % b
            rows = in_layout(base[i] + torch.as_tensor(alphas, dtype=x.dtype, device=x.device)[k].view(-1, 1, 1, 1)
                             * diff[i], layout)
            _fresh(rec)
            o = model(rows)  # no gradient below the layer: the capture makes its output the leaf
            check_finite(o, "outputs on interpolated inputs")
            s = row_scores(o, target, None if idx is None else idx[i])
            (g,) = torch.autograd.grad(s.sum(), rec.raw(name))
            w = torch.as_tensor(weights, dtype=torch.float64, device=x.device)[k]
            if total is None:
                total = torch.zeros((b,) + tuple(g.shape[1:]), dtype=torch.float64, device=x.device)
            total.index_add_(0, i, g.double() * w.view((-1,) + (1,) * (g.dim() - 1)))
    layer_attr = total.to(x.dtype)
    raw, maps = finish_region(layer_attr.sum(1), tuple(x.shape[-2:]), relu, normalize)
    return Explanation(maps=maps, method="internal_influence", target=idx, layer=name, raw=raw,
                       scores=row_scores(out, target, idx),
                       extras={"layer_attributions": layer_attr, "steps": steps, "integration": method,
                               "forward_backward_passes": steps * b}, outputs=tensor_outputs(out))


register("internal_influence", internal_influence, kind="region", needs_layer=True,
         doc="Internal influence (Leino et al. 2018), 50 steps; a row is one point of one image's path")


def _neuron_path(model, x, name, neuron, chosen, base, diff, alphas, weights, batch_size, *, target=None,
                 idx=None, values: torch.Tensor | None = None) -> torch.Tensor:
    """Sum over the path points of weight x d unit / d input (conductance through the unit when ``target``
    is given: d score / d unit elements times d unit elements / d input); ``values`` (B,), when given, receives
    each image's unit value at the path's last point."""
    b = x.shape[0]
    total = torch.zeros_like(x, dtype=torch.float64)
    layout = row_layout(model, x)
    with capture(model, [name]) as rec:
        for sl in chunks(len(alphas) * b, batch_size):
            r = torch.arange(sl.start, sl.stop, device=x.device)
            k, i = r // b, r % b
            rows = in_layout(base[i] + torch.as_tensor(alphas, dtype=x.dtype, device=x.device)[k].view(-1, 1, 1, 1)
                             * diff[i], layout).requires_grad_(True)
            _fresh(rec)
            o = model(rows.clone(memory_format=torch.preserve_format))
            check_finite(o, "outputs on the path")
            a = rec.raw(name)
            mask = _unit_mask(a, neuron, chosen, i)
            if values is not None:
                last = k == len(alphas) - 1
                values[i[last]] = (a * mask).detach()[last].reshape(int(last.sum()), -1).sum(1).to(values.dtype)
            if target is None:
                unit = (a * mask).sum()
            else:
                s = row_scores(o, target, None if idx is None else idx[i])
                (ga,) = torch.autograd.grad(s.sum(), a, retain_graph=True)
                unit = (a * mask * ga.detach()).sum()
            (g,) = torch.autograd.grad(unit, rows, allow_unused=True)
            g = torch.zeros_like(rows) if g is None else g
            w = torch.as_tensor(weights, dtype=torch.float64, device=x.device)[k]
            total.index_add_(0, i, g.double() * w.view(-1, 1, 1, 1))
    return total


def _unit_values(model, x, name, neuron, chosen, batch_size) -> torch.Tensor:
    vals = []
    with capture(model, [name], grad=False) as rec:
        for sl in chunks(x.shape[0], batch_size):
            _fresh(rec)
            model(x[sl])
            a = rec.raw(name)
            i = torch.arange(sl.start, sl.stop, device=x.device)
            vals.append((a * _unit_mask(a, neuron, chosen, i)).reshape(len(i), -1).sum(1))
    return torch.cat(vals)


def neuron_gradient(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                    layer: str | nn.Module | None = None, *, neuron: Neuron = None,
                    batch_size: int | None = None) -> Explanation:
    """Neuron gradient: d unit / d input for one unit (``neuron``) of ``layer``; ``target`` is not used (the
    unit is what is explained). A row is one image."""
    x, _, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    model = folded_model(model, x, keep=name)  # BatchNorms folded on the CPU, the layer's own kept
    _, chosen = _layer_shape_and_choice(model, x, name, neuron, batch_size)
    values = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)  # the rows are the images: their units
    g = _neuron_path(model, x, name, neuron, chosen, torch.zeros_like(x), x, [1.0], [1.0], batch_size,
                     values=values)
    return Explanation(maps=g.to(x.dtype), method="neuron_gradient", layer=name, scores=values,
                       extras={"neuron": neuron if neuron is not None else chosen, "forward_backward_passes":
                               x.shape[0]})


register("neuron_gradient", neuron_gradient, kind="pixel", needs_layer=True,
         doc="Gradient of one unit of a layer (default: the most active channel); a row is an image")


def neuron_integrated_gradients(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                                layer: str | nn.Module | None = None, *, neuron: Neuron = None,
                                baseline: str | float | torch.Tensor = "zeros", steps: int = 50,
                                method: str = "gausslegendre", blur_sigma: float = 10.0, seed: int = 0,
                                batch_size: int | None = None) -> Explanation:
    """Integrated Gradients of one unit (``neuron``) of ``layer`` instead of a class score (Captum's
    NeuronIntegratedGradients); ``target`` is not used. A row is one point of one image's path."""
    x, _, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    model = folded_model(model, x, keep=name)  # BatchNorms folded on the CPU, the layer's own kept
    _, chosen = _layer_shape_and_choice(model, x, name, neuron, batch_size)
    base, diff = _path(x, baseline, blur_sigma, seed)
    alphas, weights = ig_quadrature(steps, method)
    total = _neuron_path(model, x, name, neuron, chosen, base, diff, alphas, weights, batch_size)
    attr = (diff.double() * total).to(x.dtype)
    values = _unit_values(model, x, name, neuron, chosen, batch_size)
    change = values - _unit_values(model, base, name, neuron, chosen, batch_size)
    return Explanation(maps=attr, method="neuron_integrated_gradients", layer=name, scores=values,
                       extras={"neuron": neuron if neuron is not None else chosen, "steps": steps,
                               "delta": attr.reshape(len(x), -1).sum(1) - change,
                               "forward_backward_passes": steps * x.shape[0]})


register("neuron_integrated_gradients", neuron_integrated_gradients, kind="pixel", needs_layer=True,
         aliases=("neuron_ig",), doc="Integrated Gradients of one unit of a layer, 50 steps; a row is one path point")


def neuron_conductance(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
                       layer: str | nn.Module | None = None, *, neuron: Neuron = None,
                       baseline: str | float | torch.Tensor = "zeros", steps: int = 50,
                       method: str = "gausslegendre", blur_sigma: float = 10.0, seed: int = 0,
                       batch_size: int | None = None) -> Explanation:
    """Neuron conductance (Dhamdhere et al. 2018): the part of each input's Integrated Gradients attribution to
    the target that flows through one unit (``neuron``) of ``layer``: (x - x') times the path sum of
    d score / d unit times d unit / d input. For a channel the conductances of its elements add up; summed over
    every unit of the layer they give Integrated Gradients. A row is one point of one image's path."""
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    model = folded_model(model, x, keep=name)  # BatchNorms folded on the CPU, the layer's own kept
    _, chosen = _layer_shape_and_choice(model, x, name, neuron, batch_size)
    base, diff = _path(x, baseline, blur_sigma, seed)
    alphas, weights = ig_quadrature(steps, method)
    idx, out = clean_pass(model, x, target, batch_size)
    total = _neuron_path(model, x, name, neuron, chosen, base, diff, alphas, weights, batch_size, target=target,
                         idx=idx)
    return Explanation(maps=(diff.double() * total).to(x.dtype), method="neuron_conductance", target=idx,
                       layer=name, scores=row_scores(out, target, idx),
                       extras={"neuron": neuron if neuron is not None else chosen, "steps": steps,
                               "forward_backward_passes": steps * x.shape[0]}, outputs=tensor_outputs(out))


register("neuron_conductance", neuron_conductance, kind="pixel", needs_layer=True,
         doc="Conductance of one unit of a layer for the target, 50 steps; a row is one path point")
