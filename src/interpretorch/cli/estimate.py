"""What a long run will cost, said before it starts (issue 32): the CLI prints the library's estimates.

``announce`` prints the expected model rows and time of each method (``attribution.cost.estimate_run``: the
method descriptions and one timed forward / backward on the user's model and device) and, above two minutes,
the options that would make the run shorter; ``say`` prints any ``Estimate`` (sanity, TCAV, dataset jobs).
``cpu_settings`` (``attribution.cost``) gives the lighter options ``explain`` uses on a CPU unless
``--paper-settings`` is given; options the user names with ``--option`` always win.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence, TextIO

import torch
from torch import nn

from interpretorch.attribution.cost import CPU_SETTINGS, LONG_SECONDS, SHORTER, Estimate, cpu_settings

__all__ = ["CPU_SETTINGS", "LONG_SECONDS", "SHORTER", "announce", "cpu_settings", "row_bar", "say"]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def say(est: Estimate, file: TextIO | None = None) -> int | None:
    """Print an estimate's rows and time (and, for a long run, the settings that shorten it); return its rows
    (None when a part is not estimated)."""
    file = file or sys.stderr
    print(f"interpretorch: about {est.rows:,} model rows, {_duration(est.seconds)} on {est.device}"
          + (f" (plus {', '.join(est.unknown)}, not estimated)" if est.unknown else ""), file=file)
    if est.long and est.shorter:
        print("interpretorch: to make it shorter: "
              + "; ".join(f"{name} ({_duration(secs)}): {advice}" for name, secs, advice in est.shorter), file=file)
    return None if est.unknown else est.rows


def announce(model: nn.Module, x: torch.Tensor, methods: Sequence[str], options: Mapping[str, Mapping] | None,
             layer: Any = None, batch_size: int | None = None, *, repeats: int = 1, file: TextIO | None = None
             ) -> int | None:
    """Print the expected rows and time of running ``methods`` on ``x`` (``repeats`` times), and shorter settings
    above two minutes; return the total rows (None when a method's count is unknown)."""
    from interpretorch.attribution.cost import estimate_run

    return say(estimate_run(model, x, methods, options, layer, batch_size, repeats=repeats), file)


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
