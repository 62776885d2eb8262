"""What a long run will cost, said before it starts, and the settings a CPU finishes (issue 32).

``announce`` prints the expected model rows and time of each method (from the method descriptions and one timed
forward / backward on the user's model and device) and, above two minutes, the options that would make the run
shorter. ``cpu_settings`` gives the lighter options ``explain`` and ``sanity`` use on a CPU unless
``--paper-settings`` is given; options the user names with ``--option`` always win.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence, TextIO

import torch
from torch import nn

LONG_SECONDS = 120.0

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

# What to change when a method dominates a long run: (option, smaller value) or a sentence.
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
                 given: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The options to run ``methods`` with, and what to record: the CPU's lighter ones unless ``paper`` or not
    on a CPU; the user's own options (``given``) always win."""
    cpu = torch.device(device).type == "cpu" and not paper
    options = {m: dict(v) for m, v in given.items()}
    changed: dict[str, dict[str, Any]] = {}
    if cpu:
        for m in methods:
            for k, v in CPU_SETTINGS.get(m, {}).items():
                if k not in options.get(m, {}):
                    options.setdefault(m, {})[k] = v
                    changed.setdefault(m, {})[k] = v
    record = {"profile": "cpu" if cpu else "paper", "changed": changed,
              "note": ("lighter CPU settings; --paper-settings runs the papers' settings" if cpu
                       else "the papers' settings (the library defaults)")}
    return options, record


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def announce(model: nn.Module, x: torch.Tensor, methods: Sequence[str], options: Mapping[str, Mapping] | None,
             layer: Any = None, batch_size: int | None = None, *, repeats: int = 1, file: TextIO | None = None
             ) -> int | None:
    """Print the expected rows and time of running ``methods`` on ``x`` (``repeats`` times), and shorter settings
    above two minutes; return the total rows (None when a method's count is unknown)."""
    from interpretorch.attribution.cost import estimate

    file = file or sys.stderr
    costs = estimate(model, x, methods, options, layer, batch_size)
    rows = sum(c.rows or 0 for c in costs) * repeats
    seconds = sum(c.seconds or 0.0 for c in costs) * repeats
    unknown = [c.method for c in costs if c.rows is None]
    print(f"interpretorch: about {rows:,} model rows, {_duration(seconds)} on {x.device.type}"
          + (f" (plus {', '.join(unknown)}, not estimated)" if unknown else ""), file=file)
    if seconds > LONG_SECONDS:
        heavy = sorted((c for c in costs if c.seconds), key=lambda c: -c.seconds)[:4]
        tips = [f"{c.method} ({_duration(c.seconds * repeats)}): {SHORTER[c.method]}" for c in heavy
                if c.method in SHORTER and c.seconds * repeats > LONG_SECONDS / 8]
        if tips:
            print("interpretorch: to make it shorter: " + "; ".join(tips), file=file)
    return None if unknown else rows


@contextmanager
def row_bar(total: int | None, desc: str = "model rows") -> Iterator[None]:
    """Show a progress bar of model rows done (advanced by the methods' shared batching loop)."""
    from tqdm import tqdm

    from interpretorch.core import track

    bar = tqdm(total=total, desc=desc, unit="row", file=sys.stderr, position=1, leave=False)
    try:
        with track(total, on_advance=lambda done, _: bar.update(done - bar.n)):
            yield
    finally:
        bar.close()
