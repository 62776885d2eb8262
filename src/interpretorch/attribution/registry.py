"""Method names -> implementations, and ``explain`` which runs any set of them sharing passes."""
from __future__ import annotations

import inspect
from typing import Callable, Sequence

import torch
from torch import nn

from interpretorch.attribution.cam import CAM_METHODS, layer_cams
from interpretorch.attribution.gradient import (deconvnet, gradient, gradient_x_input, guided_backprop,
                                                guided_gradcam, integrated_gradients, smoothgrad, vargrad)
from interpretorch.attribution.perturbation import occlusion, rise
from interpretorch.attribution.score import ablation_cam, score_cam
from interpretorch.explanation import Explanation
from interpretorch.targets import Target

# name -> function(model, inputs, target=..., layer=..., batch_size=..., **options) -> Explanation
METHODS: dict[str, Callable[..., Explanation]] = {
    "scorecam": score_cam,
    "ablationcam": ablation_cam,
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
    "vargrad": vargrad,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "guided_gradcam": guided_gradcam,
    "occlusion": occlusion,
    "rise": rise,
}
ALIASES = {"grad-cam": "gradcam", "gradcampp": "gradcam++", "grad-cam++": "gradcam++", "x-grad-cam": "xgradcam",
           "score-cam": "scorecam", "ablation-cam": "ablationcam", "eigen-cam": "eigencam",
           "layer-cam": "layercam", "hires-cam": "hirescam",
           "saliency": "gradient", "vanilla_gradient": "gradient", "grad": "gradient",
           "gradientxinput": "gradient_x_input", "gradient*input": "gradient_x_input",
           "gradxinput": "gradient_x_input", "input_x_gradient": "gradient_x_input",
           "inputxgradient": "gradient_x_input", "ig": "integrated_gradients",
           "integratedgradients": "integrated_gradients", "smooth_grad": "smoothgrad", "var_grad": "vargrad",
           "guidedbackprop": "guided_backprop", "gbp": "guided_backprop", "deconv": "deconvnet",
           "deconvolution": "deconvnet", "guidedgradcam": "guided_gradcam", "guided_grad_cam": "guided_gradcam",
           "occ": "occlusion"}
# Methods that need a spatial layer (the others work on the input pixels).
LAYER_METHODS = set(CAM_METHODS) | {"scorecam", "ablationcam", "guided_gradcam"}


def register(name: str, fn: Callable[..., Explanation], layer: bool = False) -> None:
    """Add a method under ``name`` (``layer=True`` when it explains a hidden layer)."""
    METHODS[name] = fn
    if layer:
        LAYER_METHODS.add(name)


def available_methods() -> list[str]:
    """Return every method name ``explain`` accepts."""
    return list(CAM_METHODS) + [m for m in METHODS if m not in CAM_METHODS]


def canonical(name: str) -> str:
    """Return the registered spelling of a method name, or raise listing the valid ones."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in CAM_METHODS and key not in METHODS:  # guided-backprop, Guided Backprop, ...
        spaced = key.replace("-", "_").replace(" ", "_")
        key = ALIASES.get(spaced, spaced)
    if key not in CAM_METHODS and key not in METHODS:
        import difflib

        close = difflib.get_close_matches(key, available_methods(), n=3)
        raise ValueError(f"unknown method {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                         + f" Available: {', '.join(available_methods())}")
    return key


def explain(model: nn.Module, inputs: torch.Tensor, methods: str | Sequence[str] = "gradcam",
            target: Target = "top1", layer: str | nn.Module | None = None, *, batch_size: int | None = None,
            options: dict[str, dict] | None = None, **shared) -> Explanation | dict[str, Explanation]:
    """Explain ``model``'s prediction on ``inputs`` with one method (returns an Explanation) or several (a dict).

    The gradient CAMs requested together share one forward/backward pass; ``options`` maps a method
    name to its own keyword arguments; other keyword arguments go to every method that takes them
    (``normalize=True`` reaches the CAMs, not the pixel attributions), and one that no requested
    method takes is an error.
    """
    single = isinstance(methods, str) and methods != "all"
    if methods == "all":
        names = available_methods()
    else:
        names = [canonical(m) for m in ([methods] if isinstance(methods, str) else methods)]
    options = {canonical(k): v for k, v in (options or {}).items()}
    unused = [k for k in shared if not any(_accepts(_function(m), k) for m in names)]
    if unused:
        raise TypeError(f"option(s) {unused} are taken by none of the methods {names}; "
                        "give method-specific options as options={'method': {...}}")
    result: dict[str, Explanation] = {}
    grouped = [m for m in names if m in CAM_METHODS and not options.get(m)]
    if grouped:
        kw = {k: v for k, v in shared.items() if _accepts(layer_cams, k)}
        result.update(layer_cams(model, inputs, grouped, target, layer, batch_size=batch_size, **kw))
    for m in names:
        if m in result:
            continue
        kw = {k: v for k, v in shared.items() if _accepts(_function(m), k)}
        kw.update(options.get(m, {}))
        if batch_size is not None:
            kw.setdefault("batch_size", batch_size)
        if m in CAM_METHODS:
            result[m] = layer_cams(model, inputs, [m], target, layer, **kw)[m]
        elif m in LAYER_METHODS:
            result[m] = METHODS[m](model, inputs, target, layer, **kw)
        else:
            result[m] = METHODS[m](model, inputs, target, **kw)
    ordered = {m: result[m] for m in names}
    return ordered[names[0]] if single else ordered


def _function(name: str) -> Callable[..., Explanation]:
    return layer_cams if name in CAM_METHODS else METHODS[name]


def _accepts(fn: Callable, key: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``key``."""
    params = inspect.signature(fn).parameters
    return key in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
