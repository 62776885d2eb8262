"""Method names -> implementations, and ``explain`` which runs any set of them sharing passes."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from interpretorch.attribution.cam import CAM_METHODS, layer_cams
from interpretorch.attribution.score import ablation_cam, score_cam
from interpretorch.explanation import Explanation
from interpretorch.targets import Target

# name -> function(model, inputs, target=..., layer=..., batch_size=..., **options) -> Explanation
METHODS: dict[str, Callable[..., Explanation]] = {
    "scorecam": score_cam,
    "ablationcam": ablation_cam,
}
ALIASES = {"grad-cam": "gradcam", "gradcampp": "gradcam++", "grad-cam++": "gradcam++", "x-grad-cam": "xgradcam",
           "score-cam": "scorecam", "ablation-cam": "ablationcam", "eigen-cam": "eigencam",
           "layer-cam": "layercam", "hires-cam": "hirescam"}
# Methods that need a spatial layer (the others work on the input pixels).
LAYER_METHODS = set(CAM_METHODS) | {"scorecam", "ablationcam"}


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
    name to its own keyword arguments; other keyword arguments go to every method.
    """
    single = isinstance(methods, str) and methods != "all"
    if methods == "all":
        names = available_methods()
    else:
        names = [canonical(m) for m in ([methods] if isinstance(methods, str) else methods)]
    options = {canonical(k): v for k, v in (options or {}).items()}
    result: dict[str, Explanation] = {}
    grouped = [m for m in names if m in CAM_METHODS and not options.get(m)]
    if grouped:
        result.update(layer_cams(model, inputs, grouped, target, layer, batch_size=batch_size, **shared))
    for m in names:
        if m in result:
            continue
        kw = dict(shared)
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
