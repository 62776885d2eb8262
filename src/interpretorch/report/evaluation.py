"""The report's evaluation section: a metrics table per method and the deletion / insertion curves."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping


def curves_figure(evaluation: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path | None:
    """Plot the mean deletion and insertion curves of every method side by side; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("deletion", "insertion") if any(k in v for v in evaluation.values())]
    if not kinds:
        return None
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for method, entry in evaluation.items():
            if kind in entry and entry[kind].get("curve"):
                auc = entry[kind]["value"]
                ax.plot(entry[kind]["x"], entry[kind]["curve"], label=f"{method} (AUC {auc:.3f})")
        ax.set_title(f"{kind} ({'lower' if kind == 'deletion' else 'higher'} is better)")
        ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"))
        ax.set_ylabel("target score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def evaluation_table(evaluation: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics table as data for the template: columns (label, unit, direction) and rows of cells
    (text, best) - one row per method, the best value of each column marked."""
    from interpretorch.metrics import METRIC_INFO

    cols = [m for m in METRIC_INFO if any(m in v for v in evaluation.values())]
    best = {}
    for c in cols:
        vals = [v[c]["value"] for v in evaluation.values() if c in v and v[c]["value"] is not None]
        if vals:
            best[c] = (min if METRIC_INFO[c][1] == "lower" else max)(vals)
    columns = [{"label": METRIC_INFO[c][0] + (" (%)" if METRIC_INFO[c][2] == "%" else ""),
                "better": METRIC_INFO[c][1]} for c in cols]
    rows = []
    for method, entry in evaluation.items():
        cells = []
        for c in cols:
            v = entry.get(c, {}).get("value")
            cells.append({"text": "-" if v is None else f"{v:.3f}", "best": v is not None and v == best.get(c)})
        rows.append({"method": method, "cells": cells})
    return {"columns": columns, "rows": rows}
