"""The report's evaluation section: a metrics table per method and the deletion / insertion curves."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from interpretorch.explanation import Explanation


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


def metrics_table_html(evaluation: Mapping[str, Mapping[str, Any]]) -> str:
    """Return an HTML table: one row per method, one column per metric, best value in bold."""
    from interpretorch.metrics import METRIC_INFO

    cols = [m for m in METRIC_INFO if any(m in v for v in evaluation.values())]
    best = {}
    for c in cols:
        vals = [v[c]["value"] for v in evaluation.values() if c in v and v[c]["value"] is not None]
        if vals:
            best[c] = (min if METRIC_INFO[c][1] == "lower" else max)(vals)
    head = "".join(f"<th>{METRIC_INFO[c][0]}{' (%)' if METRIC_INFO[c][2] == '%' else ''}<br>"
                   f"<small>{METRIC_INFO[c][1]} is better</small></th>" for c in cols)
    rows = []
    for method, entry in evaluation.items():
        cells = []
        for c in cols:
            v = entry.get(c, {}).get("value")
            text = "-" if v is None else f"{v:.3f}"
            cells.append(f"<td><b>{text}</b></td>" if v is not None and v == best.get(c) else f"<td>{text}</td>")
        rows.append(f"<tr><td class='l'>{method}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th class='l'>method</th>{head}</tr>{''.join(rows)}</table>"


def add_evaluation(results: dict[str, Any], model: nn.Module, inputs: torch.Tensor,
                   explanations: Mapping[str, Explanation], args: Any) -> None:
    """Evaluate the run's maps, store the numbers in ``results`` and the curves figure beside the report."""
    from interpretorch.metrics import evaluate

    evaluation = evaluate(model, inputs, explanations, target=args.target, batch_size=args.batch_size or 16)
    results["evaluation"] = evaluation
    html = metrics_table_html(evaluation)
    fig = curves_figure(evaluation, Path(args.out) / "images" / "curves.png")
    if fig is not None:
        html += '<p><img src="images/curves.png" alt="deletion and insertion curves" style="max-width:100%"></p>'
    results["evaluation_html"] = html
