"""The report's evaluation section: metric tables (mean ± std over n images, region maps and pixel attributions
apart), the protocol each metric followed, and the deletion, insertion and ROAD curves."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from interpretorch.core.stats import separated_best
from interpretorch.metrics.evaluate import win_within
from interpretorch.metrics.registry import CATEGORIES, figures

GROUPS = (("region", "Region maps (CAMs, perturbation, attention)"), ("pixel", "Pixel attributions (gradients)"))
# A figure whose registered map kinds leave out pixel attributions (Average Drop, Increase in Confidence, Win
# multiply the image by the min-max normalised map: a sparse map keeps few pixels, so its drop is large by
# construction) is compared within a group only, and flagged for pixel attributions.
PIXEL_NOTE = ("Average Drop, Increase in Confidence and Win score the image multiplied by the min-max normalised "
              "map. A pixel attribution is sparse, so it keeps few pixels and its drop is large by construction: "
              "compare these columns among pixel attributions only, never with region maps. Win is counted "
              "within each group.")

BOLD_RULE = ("Bold: the best mean of its group only when its 95% t interval (mean ± t * sd / sqrt(n)) overlaps no "
             "other method's; with overlapping intervals or n < 2 nothing is bold: the difference is not "
             "established.")

CURVES = {
    "deletion": ("Deletion (lower is better)", "fraction of pixels removed", "target probability"),
    "insertion": ("Insertion (higher is better)", "fraction of pixels inserted", "target probability"),
    "road_morf": ("ROAD, most relevant first (lower is better)", "% of pixels imputed", "accuracy"),
    "road_lerf": ("ROAD, least relevant first (higher is better)", "% of pixels imputed", "accuracy"),
}


def curve_figures(evaluation: Mapping[str, Mapping[str, Any]], folder: str | Path) -> list[dict[str, str]]:
    """One PNG per curve (deletion, insertion, ROAD MoRF and LeRF) with every method's mean curve; returns
    [{"src", "alt", "metric"}] with paths relative to the report folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    figures = []
    for key, (title, xlabel, ylabel) in CURVES.items():
        lines = [(m, e[key]) for m, e in evaluation.items() if key in e and e[key].get("curve")]
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(4.6, 3.0 + 0.22 * ((len(lines) + 1) // 2)), layout="constrained")
        for method, entry in lines:
            ylab = ylabel if entry.get("measure", "accuracy") == "accuracy" or not key.startswith("road") else "score"
            ax.plot(entry["x"], entry["curve"], marker="o" if key.startswith("road") else None, markersize=3,
                    label=f"{method} ({entry['value']:.3f})")
            ax.set_ylabel(ylab)
        if all(min(e["curve"]) >= 0 for _, e in lines):
            ax.set_ylim(bottom=0)  # probabilities and accuracies: the axis starts at 0, so drops are not magnified
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
        path = folder / f"curve_{key}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        figures.append({"src": f"images/{path.name}", "alt": title, "metric": key})
    return figures


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{value:.1f}"
    return f"{value:.3f}" if value == 0 or abs(value) >= 0.01 else f"{value:.2e}"


def evaluation_table(evaluation: Mapping[str, Mapping[str, Any]],
                     kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The metrics tables as data for the template: one group per map kind present (region, pixel), each with
    columns (label, direction, unit, family; grouped by family, ``families`` giving each family's span) and rows
    of cells ("mean ± std", best within the group, flagged where the
    metric does not suit the group)."""
    info = figures()
    kinds = dict(kinds or {})
    cols = [m for m in info if any(m in v for v in evaluation.values())]
    # Grouped by family (Quantus's taxonomy, in its order), the registry's order within a family.
    cols.sort(key=lambda c: CATEGORIES.index(info[c].category))
    families = [{"name": f, "span": sum(info[c].category == f for c in cols)} for f in CATEGORIES]
    families = [f for f in families if f["span"]]
    groups = []
    for gkind, title in GROUPS:
        methods = [m for m in evaluation if (kinds.get(m, "region") == "pixel") == (gkind == "pixel")]
        if not methods:
            continue
        entries = {m: dict(evaluation[m]) for m in methods}
        if "win" in cols and len(methods) < len(evaluation):
            for m, w in win_within(evaluation, methods).items():
                entries[m]["win"] = w
        best, bold = {}, {}
        for c in cols:
            bold[c] = separated_best({m: (entries[m][c].get("value"), entries[m][c].get("std"), entries[m][c].get("n"))
                                      for m in methods if c in entries[m]}, info[c].direction)
            vals = [entries[m][c]["value"] for m in methods if c in entries[m] and entries[m][c]["value"] is not None]
            if len(vals) > 1:
                best[c] = info[c].better(vals)
        flagged = {c for c in cols if not info[c].suits(gkind)}
        columns = [{"key": c, "label": info[c].label + (" (%)" if info[c].unit == "%" else ""),
                    "better": info[c].direction, "flag": c in flagged, "family": info[c].category} for c in cols]
        rows = []
        for m in methods:
            cells = []
            for c in cols:
                entry = entries[m].get(c, {})
                v, std, n = entry.get("value"), entry.get("std"), entry.get("n")
                unit = info[c].unit
                text = _fmt(v, unit) + (f" ± {_fmt(std, unit)}" if std is not None and v is not None else "")
                cells.append({"text": text, "mean": _fmt(v, unit),
                              "std": _fmt(std, unit) if std is not None and v is not None else None,
                              "best": v is not None and v == best.get(c), "bold": bold.get(c) == m, "n": n,
                              "flag": c in flagged,
                              "title": f"{info[c].label}: mean {_fmt(v, unit)}, sample std "
                                       f"{_fmt(std, unit)}, n = {n} images"})
            rows.append({"method": m, "cells": cells})
        ns = sorted({e.get("n") for m in methods for c, e in entries[m].items()
                     if isinstance(e, dict) and e.get("n") is not None})
        groups.append({"kind": gkind, "title": title, "columns": columns, "rows": rows, "families": families,
                       "n": ns[-1] if ns else None, "n_varies": len(ns) > 1,
                       "note": PIXEL_NOTE if gkind == "pixel" and flagged & set(cols) else None,
                       "bold_rule": BOLD_RULE})
    return {"groups": groups, "columns": groups[0]["columns"] if groups else [],
            "rows": [row for g in groups for row in g["rows"]]}


def protocol_lines(protocol: Mapping[str, Mapping[str, Any]] | None, present: set[str]) -> list[str]:
    """The protocol of each metric computed, one human line each."""
    if not protocol:
        return []
    lines = []
    p = protocol
    if "confidence" in p and present & {"average_drop", "increase_in_confidence", "win"}:
        c = p["confidence"]
        lines.append(f"Average Drop / Increase in Confidence / Win: image multiplied by the min-max normalised map "
                     f"over a {c.get('baseline')} baseline (in the model's input space); scores are "
                     f"{'class probabilities' if c.get('softmax', True) else 'logits'}.")
    for key in ("deletion", "insertion"):
        if key in p and key in present:
            d = p[key]
            sub = d.get("substrate")
            if sub == "blur":
                sub = f"Gaussian blur (kernel {d.get('blur_kernel')}, sigma {d.get('blur_sigma')})"
            step = d.get("step")
            step_text = f"{step * 100:g}% of the pixels per step" if isinstance(step, float) else f"{step} pixels per step"
            lines.append(f"{key.capitalize()}: pixels {'replaced by' if key == 'deletion' else 'revealed over'} "
                         f"{sub}, {step_text}, most salient first; area under the target "
                         f"{'probability' if d.get('softmax', True) else 'logit'} curve.")
    if "road" in p and present & {"road_morf", "road_lerf"}:
        d = p["road"]
        pct = ", ".join(f"{v:g}" for v in d.get("percentages", []))
        lines.append(f"ROAD: {pct}% of the pixels removed (most relevant first: MoRF; least: LeRF) and filled by "
                     f"noisy linear imputation (noise {d.get('noise')}, seed {d.get('seed')}); value = share of "
                     "images whose target stays the top class, averaged over the percentages.")
    if "infidelity" in p and "infidelity" in present:
        d = p["infidelity"]
        lines.append(f"Infidelity: {d.get('n_perturb')} {d.get('perturbation')} perturbations (sigma "
                     f"{d.get('sigma')}, seed {d.get('seed')}) per image.")
    return lines


def evaluation_section(results: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the template's evaluation section shows, from a ``results.json`` structure."""
    evaluation = results["evaluation"]
    table = evaluation_table(evaluation, results.get("method_kinds"))
    present = {k for v in evaluation.values() for k in v}
    return {**table, "protocol": protocol_lines(results.get("evaluation_protocol"), present),
            "seconds": results.get("evaluation_seconds"), "curves": results.get("evaluation_curves") or [],
            "n_images": len(results.get("images", []))}
