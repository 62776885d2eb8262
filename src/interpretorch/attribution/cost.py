"""How many model rows each built-in method needs: what run-time estimates (``interpretorch explain``'s line
before a run) and progress totals read.

A row is what :mod:`interpretorch.core.batching` counts: one image, interpolation step, noisy copy, occluded
window, mask or masked input through the model (DeepLIFT: one image / reference pair). Each formula counts the
rows of the method's chunked loops, which is also what :func:`interpretorch.core.progress.track` counts. Where
the number depends on the data it is an upper bound: Score-CAM, Ablation-CAM, Group-CAM and SS-CAM skip channels
that are constant on an image; SLIC features are taken as ``n_segments`` per image.

:func:`estimate_run` is what a run of several methods will cost (rows, seconds, and the settings that would
shorten it); :func:`cpu_settings` gives the lighter options a CPU run uses unless the papers' settings are asked
for. The CLI only prints these.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from interpretorch.attribution.common import resolve_layer
from interpretorch.attribution.registry import Geometry, describe_rows, get_method
from interpretorch.capture import capture
from interpretorch.core import check_inputs, rows_per_pass
from interpretorch.models.layers import tail_after

__all__ = ["occlusion_windows", "feature_count", "MethodCost", "geometry_of", "time_per_row", "estimate",
           "Estimate", "estimate_run", "shorter_settings", "cpu_settings", "CPU_SETTINGS", "SHORTER", "LONG_SECONDS"]

LONG_SECONDS = 120.0  # above this, an estimate also names the settings that would make the run shorter

# Lighter settings for a CPU: the same methods with fewer samples / steps / masks (the papers' settings are the
# library defaults, one flag away: --paper-settings).
CPU_SETTINGS: dict[str, dict[str, Any]] = {
    "rise": {"n_masks": 250}, "integrated_gradients": {"steps": 16}, "smoothgrad": {"n_samples": 10},
    "vargrad": {"n_samples": 10}, "smoothgradcampp": {"n_samples": 4}, "gradient_shap": {"n_samples": 10},
    "lime": {"n_samples": 100}, "kernel_shap": {"n_samples": 100}, "shapley_sampling": {"n_samples": 5},
    "extremal_perturbation": {"iterations": 30}, "meaningful_perturbation": {"iterations": 30},
    "layer_conductance": {"steps": 16}, "internal_influence": {"steps": 16},
    "neuron_integrated_gradients": {"steps": 16}, "neuron_conductance": {"steps": 16},
}

# What to change when a method dominates a long run.
SHORTER: dict[str, str] = {
    "rise": "--option rise.n_masks=250", "integrated_gradients": "--option integrated_gradients.steps=8",
    "smoothgrad": "--option smoothgrad.n_samples=10", "vargrad": "--option vargrad.n_samples=10",
    "gradient_shap": "--option gradient_shap.n_samples=10", "lime": "--option lime.n_samples=100",
    "kernel_shap": "--option kernel_shap.n_samples=100", "shapley_sampling": "--option shapley_sampling.n_samples=5",
    "occlusion": "--option occlusion.window=48 (fewer, larger windows)",
    "extremal_perturbation": "--option extremal_perturbation.iterations=30",
    "meaningful_perturbation": "--option meaningful_perturbation.iterations=30",
    "scorecam": "--layer with fewer channels (Score-CAM runs one row per channel per image)",
    "ablationcam": "--layer with fewer channels (Ablation-CAM runs one row per channel per image)",
    "sscam": "--layer with fewer channels", "layer_conductance": "--option layer_conductance.steps=16",
}


def cpu_settings(methods: Sequence[str], device: torch.device | str, paper: bool,
                 given: Mapping[str, Mapping[str, Any]], table: Mapping[str, Mapping[str, Any]] | None = None
                 ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The options to run ``methods`` with, and what to record: the CPU's lighter ones (``table``, default
    ``CPU_SETTINGS``) unless ``paper`` or not on a CPU; the user's own options (``given``) always win."""
    cpu = torch.device(device).type == "cpu" and not paper
    table = CPU_SETTINGS if table is None else table
    options = {m: dict(v) for m, v in given.items()}
    changed: dict[str, dict[str, Any]] = {}
    if cpu:
        for m in methods:
            for k, v in table.get(m, {}).items():
                if k not in options.get(m, {}):
                    options.setdefault(m, {})[k] = v
                    changed.setdefault(m, {})[k] = v
    record = {"profile": "cpu" if cpu else "paper", "changed": changed,
              "note": ("lighter CPU settings; --paper-settings runs the papers' settings" if cpu
                       else "the papers' settings (the library defaults)")}
    return options, record


@dataclass(frozen=True)
class MethodCost:
    """The expected cost of one method on a batch: model rows (None: unknown), seconds, and the pass a row runs
    ("forward", "backward": forward and backward, "tail": only the network after the layer) at ``per_row``
    seconds each."""

    method: str
    rows: int | None
    seconds: float | None
    backward: bool
    per_row: float = 0.0
    runs: str = "forward"


def geometry_of(model: nn.Module, x: torch.Tensor, layer: Any = None) -> Geometry:
    """Images, their size and the channels of ``layer`` (the default CAM layer when None) for ``x``."""
    g, _ = _geometry_and_activation(model, x, layer)
    return g


def _geometry_and_activation(model: nn.Module, x: torch.Tensor, layer: Any) -> tuple[Geometry, tuple[str, torch.Tensor]]:
    name = resolve_layer(model, layer, x[:1])
    with capture(model, name, grad=False) as rec:
        with torch.no_grad():
            model(x[:1])
    act = rec[name]
    g = Geometry(int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1]), int(act.shape[1]) if act.dim() > 1 else 1)
    return g, (name, act.detach())


def _timed(fn: Any, sync: Any, repeats: int = 2) -> float:
    """The shortest of ``repeats`` timings of ``fn()`` (seconds), after one untimed call of the same shape."""
    fn()
    sync()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def output_sum(outputs: Any) -> torch.Tensor:
    """One number to back-propagate for timing: the first output of every row of a tensor, or the sum of the
    scores of torchvision-style detections (a list of dicts), of a dict's ``out`` / ``logits``, of a tuple's
    first member."""
    if isinstance(outputs, torch.Tensor):
        return outputs.reshape(outputs.shape[0], -1)[:, 0].sum() if outputs.dim() else outputs
    if isinstance(outputs, (list, tuple)) and outputs and all(isinstance(o, dict) for o in outputs):
        return sum((o["scores"].sum() for o in outputs if isinstance(o.get("scores"), torch.Tensor)),
                   torch.zeros(()))
    if isinstance(outputs, (list, tuple)) and outputs:
        return output_sum(outputs[0])
    for key in ("out", "logits", "image_embeds", "pooler_output"):
        v = outputs.get(key) if isinstance(outputs, dict) else getattr(outputs, key, None)
        if isinstance(v, torch.Tensor):
            return output_sum(v)
    raise TypeError(f"cannot time the backward pass of a model returning {type(outputs).__name__}")


def estimate_targets(model: nn.Module, images: torch.Tensor, targets: Sequence[Sequence[Any]],
                     methods: Sequence[str], options: Mapping[str, Mapping] | None = None, layer: Any = None,
                     batch_size: int | None = None) -> Estimate:
    """Expected rows and seconds of ``explain_targets`` on each image ``images[i]`` with its ``targets[i]`` (what
    ``explain --task`` runs): 1 + K rows per one-forward pass of the image's K targets, each other method its
    own rows on K copies (``registry.explain_targets_rows``), priced by a timed forward / backward of the model."""
    from interpretorch.attribution.registry import explain_targets_rows

    x = check_inputs(model, images)
    specs = [get_method(m) for m in methods]
    g = geometry_of(model, x[:1], layer) if any(s.needs_layer for s in specs) else Geometry(1, *x.shape[-2:])
    forward, both = time_per_row(model, x[:1], batch_size)
    unknown, parts, known, separate = [], [], [], 0
    for s in specs:
        opts = {s.name: dict((options or {}).get(s.name, {}))}
        mine = [explain_targets_rows([s.name], t, g, opts) for t in targets if t]
        if any(r is None for r in mine):
            unknown.append(s.name)
            continue
        known.append(s.name)
        separate += sum(mine)
        parts.append((s.name, sum(mine) * (both if s.backward else forward)))
    # methods of one shared pass run its forward once: the rows of all of them together, the time scaled alike
    rows = sum(explain_targets_rows(known, t, g, {m: o for m, o in (options or {}).items() if m in known}) or 0
               for t in targets if t) if known else 0
    seconds = sum(p for _, p in parts) * (rows / separate if separate else 1.0)
    return Estimate(rows, seconds, x.device.type, tuple(unknown), shorter_settings(parts, SHORTER, seconds))


def time_per_row(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> tuple[float, float]:
    """Seconds per row of one forward pass and of one forward + backward, on a full chunk of ``x``'s rows (the
    shortest of two timings after one untimed call of the same shape: the first call of a shape pays one-off
    costs that the run's many calls do not)."""
    x = check_inputs(model, x)
    n = rows_per_pass(batch_size, x.device)
    rows = x[:1].expand(n, *x.shape[1:]).clone()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    params = [p.requires_grad for p in model.parameters()]

    def forward() -> None:
        with torch.no_grad():
            model(rows)

    def both() -> None:
        leaf = rows.clone().requires_grad_(True)
        (output_sum(model(leaf)) + 0.0 * leaf.sum()).backward()

    try:
        for p in model.parameters():
            p.requires_grad_(False)
        f = _timed(forward, sync) / n
        b = _timed(both, sync, repeats=1) / n
    finally:
        for p, r in zip(model.parameters(), params):
            p.requires_grad_(r)
    return f, max(b, f)


def time_tail_per_row(model: nn.Module, name: str, act: torch.Tensor, batch_size: int | None = None
                      ) -> float | None:
    """Seconds per row of running only the network after layer ``name`` (``models.layers.tail_after``) on a full
    chunk of its activations ``act``; None when the model cannot be cut there (its rows then run the whole
    model)."""
    tail = tail_after(model, name)
    if tail is None:
        return None
    n = rows_per_pass(batch_size, act.device)
    rows = act[:1].expand(n, *act.shape[1:]).clone()
    sync = torch.cuda.synchronize if act.device.type == "cuda" else (lambda: None)

    def run() -> None:
        with torch.no_grad():
            tail(rows)

    return _timed(run, sync) / n


def estimate(model: nn.Module, x: torch.Tensor, methods: Sequence[str], options: Mapping[str, Mapping] | None = None,
             layer: Any = None, batch_size: int | None = None) -> list[MethodCost]:
    """Expected model rows and seconds of each method on ``x`` (timed forward / backward passes on the model)."""
    options = options or {}
    specs = [get_method(m) for m in methods]
    x = check_inputs(model, x)
    if any(s.needs_layer for s in specs):
        g, (name, act) = _geometry_and_activation(model, x, layer)
    else:
        g, name, act = Geometry(*x.shape[:1], *x.shape[-2:]), None, None
    forward, both = time_per_row(model, x, batch_size)
    tail = time_tail_per_row(model, name, act, batch_size) if any(s.tail for s in specs) and name else None
    costs = []
    for s in specs:
        rows = s.estimate_rows(options.get(s.name, {}), g)
        runs = "backward" if s.backward else ("tail" if s.tail and tail is not None else "forward")
        price = {"backward": both, "forward": forward, "tail": tail}[runs]
        secs = None if rows is None else rows * price
        costs.append(MethodCost(s.name, rows, secs, s.backward, price, runs))
    return costs


@dataclass(frozen=True)
class Estimate:
    """What a run will cost before it starts: model rows (of the parts whose count is known), seconds on
    ``device``, the parts not estimated, and (part, seconds, advice) for the parts that would shorten it most."""

    rows: int
    seconds: float
    device: str
    unknown: tuple[str, ...] = ()
    shorter: tuple[tuple[str, float, str], ...] = ()

    @property
    def long(self) -> bool:
        """Whether the run is expected to take more than ``LONG_SECONDS``."""
        return self.seconds > LONG_SECONDS


def shorter_settings(parts: Sequence[tuple[str, float]], advice: Mapping[str, str], total: float
                     ) -> tuple[tuple[str, float, str], ...]:
    """The advice for the (up to four) costliest ``parts`` (name, seconds) when ``total`` seconds is long."""
    if total <= LONG_SECONDS:
        return ()
    heavy = sorted((p for p in parts if p[1]), key=lambda p: -p[1])[:4]
    return tuple((name, secs, advice[name]) for name, secs in heavy
                 if name in advice and secs > LONG_SECONDS / 8)


def estimate_run(model: nn.Module, x: torch.Tensor, methods: Sequence[str],
                 options: Mapping[str, Mapping] | None = None, layer: Any = None, batch_size: int | None = None, *,
                 repeats: int = 1) -> Estimate:
    """Expected rows and seconds of running ``methods`` on ``x`` ``repeats`` times, and what would shorten it."""
    costs = estimate(model, x, methods, options, layer, batch_size)
    seconds = sum(c.seconds or 0.0 for c in costs) * repeats
    return Estimate(sum(c.rows or 0 for c in costs) * repeats, seconds, x.device.type,
                    tuple(c.method for c in costs if c.rows is None),
                    shorter_settings([(c.method, (c.seconds or 0.0) * repeats) for c in costs], SHORTER, seconds))


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, float)) else (int(v[0]), int(v[1]))


def _starts(length: int, window: int, stride: int) -> int:
    """Number of window origins every ``stride`` cells, the last one moved inside."""
    if window >= length:
        return 1
    return math.ceil((length - window) / stride) + 1


def occlusion_windows(options: Mapping[str, Any], g: Geometry) -> int:
    """Occluded windows per image for Occlusion's ``window`` / ``stride`` options on ``g``'s images."""
    window = options.get("window") or max(1, min(g.height, g.width) // 7)
    kh, kw = _pair(window)
    stride = options.get("stride") or (max(1, kh // 2), max(1, kw // 2))
    sh, sw = _pair(stride)
    return _starts(g.height, kh, sh) * _starts(g.width, kw, sw)


def feature_count(options: Mapping[str, Any], g: Geometry) -> int:
    """Features per image of the feature methods: grid cells, or ``n_segments`` SLIC superpixels."""
    if options.get("features", "slic") == "grid":
        cell = options.get("cell") or max(1, min(g.height, g.width) // 8)
        ch, cw = _pair(cell)
        return math.ceil(g.height / ch) * math.ceil(g.width / cw)
    return int(options.get("n_segments", 50))


def _sess_tiles(options: Mapping[str, Any], g: Geometry) -> int:
    window = options.get("window") or min(g.height, g.width)
    step = options.get("step") or window
    scales = options.get("scales")
    if scales is None:
        inc = int(round(window * options.get("scale_step_ratio", 2 / 7)))
        scales = [window + inc * i for i in range(int(options.get("num_scales", 3)))]
    short = min(g.height, g.width)
    n = 0
    for s in scales:
        h, w = (s, round(g.width * s / short)) if g.height <= g.width else (round(g.height * s / short), s)
        n += _count_windows(h, step, window) * _count_windows(w, step, window)
    return n


def _count_windows(length: int, step: int, window: int) -> int:
    n = 0
    for s in range(0, length, step):
        n += 1
        if s + window >= length:
            break
    return n


def _steps(o: Mapping[str, Any]) -> int:
    return int(o.get("steps", 32))


FORMULAS = {
    # name: (rows(options, geometry), runs a backward pass[, its rows run only the network after the layer])
    "scorecam": (lambda o, g: g.n_images * (1 + g.channels), False),
    "ablationcam": (lambda o, g: g.n_images * (1 + g.channels), False, True),
    "groupcam": (lambda o, g: g.n_images * (2 + min(int(o["groups"]), g.channels)), False),
    "sscam": (lambda o, g: g.n_images * (1 + g.channels * int(o["n_samples"])), False),
    "integrated_gradients": (lambda o, g: g.n_images * (_steps(o) + 2), True),
    "smoothgrad": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "vargrad": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "smoothgradcampp": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "occlusion": (lambda o, g: g.n_images * (1 + occlusion_windows(o, g)), False),
    "rise": (lambda o, g: g.n_images * (1 + int(o["n_masks"] if o.get("masks") is None else len(o["masks"]))),
             False),
    "sess": (lambda o, g: g.n_images * (1 + _sess_tiles(o, g)
                                        + _sess_tiles(o, g) - int(_sess_tiles(o, g) * float(o["pre_filter_ratio"]))),
             True),
    "extremal_perturbation": (lambda o, g: g.n_images * (len(o["areas"]) * (int(o["iterations"]) + 2) + 1), True),
    "meaningful_perturbation": (lambda o, g: g.n_images * (int(o["iterations"]) + 2), True),
    "deeplift_shap": (lambda o, g: g.n_images * (2 if o.get("baselines") is None else len(o["baselines"])), True),
    "gradient_shap": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), True),
    "shapley_sampling": (lambda o, g: g.n_images * (2 + int(o["n_samples"]) * feature_count(o, g)), False),
    "feature_ablation": (lambda o, g: g.n_images * (1 + feature_count(o, g)), False),
    "feature_permutation": (lambda o, g: g.n_images * (1 + feature_count(o, g)), False),
    "lime": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), False),
    "kernel_shap": (lambda o, g: g.n_images * (int(o["n_samples"]) + 1), False),
    "layer_conductance": (lambda o, g: g.n_images * (_steps(o) + 2), True),
    "internal_influence": (lambda o, g: g.n_images * (_steps(o) + 1), True),
    # the neuron methods choose each image's unit in a pass of their own, or read a given unit's shape from one row
    "neuron_gradient": (lambda o, g: g.n_images + (g.n_images if o.get("neuron") is None else 1), True),
    "neuron_integrated_gradients": (lambda o, g: g.n_images * (_steps(o) + 2)
                                    + (g.n_images if o.get("neuron") is None else 1), True),
    "neuron_conductance": (lambda o, g: g.n_images * (_steps(o) + 1)
                           + (g.n_images if o.get("neuron") is None else 1), True),
}

for _name, (_rows, _backward, *_tail) in FORMULAS.items():
    describe_rows(_name, _rows, backward=_backward, tail=bool(_tail and _tail[0]))
