"""Write a sanity-check result as the paper's figure, similarity curves, ``sanity.json`` and ``index.html``."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from interpretorch.core import flags as red
from interpretorch.core.stats import mean_ci
from interpretorch.report.answer import ANSWER_CSS, answer_html, colorbar_html, settings_html
from interpretorch.report.drawing import render_visualization, to_uint8_images
from interpretorch.sanity.checks import SanityResult

METRIC_LABELS = {"spearman_abs": "Spearman (absolute maps)", "spearman": "Spearman (signed maps)", "ssim": "SSIM",
                 "hog": "HOG correlation", "topk": "top-k intersection"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure(result: SanityResult, image: int = 0, path: str | Path | None = None,
           display_image: np.ndarray | torch.Tensor | None = None, title: str | None = None):
    """The paper's figure for one image: rows the methods, columns the original map then each step, each map in
    the absolute-grayscale view (99th-percentile clipped); with ``display_image`` the input comes first."""
    plt = _plt()
    if not result.original_maps:
        raise ValueError("this result kept no maps (keep_maps=0); rerun with keep_maps >= 1 for the figure")
    kept = next(iter(result.original_maps.values())).shape[0]
    if not 0 <= image < kept:
        raise ValueError(f"image {image} has no kept maps; maps were kept for the first {kept} images")
    cols = ["original"] + list(result.steps)
    extra = display_image is not None
    n_rows, n_cols = len(result.methods), len(cols) + extra
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.3 * n_rows + 1.2), squeeze=False)
    for r, m in enumerate(result.methods):
        tiles = [result.original_maps[m][image:image + 1]] + [s[image:image + 1] for s in result.step_maps[m]]
        if extra:
            ax = axes[r, 0]
            ax.imshow(to_uint8_images(display_image)[0])
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title("input", fontsize=7)
        for c, t in enumerate(tiles):
            ax = axes[r, c + extra]
            ax.imshow(render_visualization(t, "abs_grayscale")[0])
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8, rotation=60, ha="left", va="bottom")
        axes[r, 0].set_ylabel(m, fontsize=8)
    mode = {"cascading": "cascading randomization, top block first", "independent": "independent randomization",
            "data": "data randomization"}.get(result.mode, result.mode)
    fig.suptitle(title or f"{mode}: image {image}", fontsize=9)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def curves(result: SanityResult, path: str | Path | None = None, metrics: Sequence[str] | None = None):
    """Each similarity metric against the step, one line per method (mean, band: +-1 std over images), with the
    method's random-map (dash-dot) and edge-map (dashed) baselines."""
    plt = _plt()
    metrics = list(metrics or next(iter(result.similarity.values())).keys())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.8), squeeze=False)
    x = np.arange(len(result.steps) + 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for i, m in enumerate(result.methods):
            c = colors[i % len(colors)]
            vals = result.similarity[m][metric].to(torch.float64)
            mean = torch.cat([torch.ones(1, dtype=torch.float64), torch.nanmean(vals, 0)]).numpy()
            std = np.concatenate([[0.0], np.nanstd(vals.numpy(), axis=0)])
            ax.plot(x, mean, "o-", color=c, lw=1.5, ms=3, label=m)
            ax.fill_between(x, mean - std, mean + std, color=c, alpha=0.15, lw=0)
            for kind, style in (("edge", "--"), ("random", "-.")):
                if kind in result.baselines and m in result.baselines[kind]:
                    v = float(torch.nanmean(result.baselines[kind][m][metric].to(torch.float64)))
                    if not math.isnan(v):
                        ax.axhline(v, color=c, ls=style, lw=1, alpha=0.8,
                                   label=f"{m}: {kind} map" if metric == metrics[0] else None)
        ax.set_xticks(x)
        ax.set_xticklabels(["original"] + list(result.steps), rotation=90, fontsize=6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=9)
        ax.axhline(0.0, color="k", lw=0.5)
    axes[0][0].set_ylabel("similarity to the original map")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def verdict_evidence(data: dict) -> dict[str, dict]:
    """Per method the numbers behind its verdict, from ``sanity.json``'s structure: the step where its mean
    similarity was lowest (up to the verdict's step), the n images defined there and the 95% t interval."""
    out = {}
    for m, e in data["methods"].items():
        v = e["verdict"]
        rows = e.get(v["metric"], {}).get("per_image") or []
        steps = data["steps"]
        best = None
        for j in range(min(v["by_step_index"] + 1, len(steps))):
            vals = [row[j] for row in rows if j < len(row) and row[j] is not None]
            if vals:
                ci = mean_ci(vals)
                if ci["ci_low"] is not None:  # similarities lie in [-1, 1]: so does the interval of their mean
                    ci["ci_low"], ci["ci_high"] = max(-1.0, ci["ci_low"]), min(1.0, ci["ci_high"])
                if best is None or ci["mean"] < best["mean"]:
                    best = {**ci, "step": steps[j]}
        defined = [sum(1 for row in rows if j < len(row) and row[j] is not None) for j in range(len(steps))]
        out[m] = {"at": best, "defined": defined, "n": len(rows)}
    return out


def sanity_answer(data: dict) -> tuple[str, list[dict]]:
    """The sanity page's headline (which methods pass, with n and the interval at the deciding step) and its
    red flags (steps where a method's similarity is undefined for some images; verdicts whose interval straddles
    the threshold)."""
    ev = verdict_evidence(data)
    test = {"cascading": "the cascading randomization test", "independent": "the independent randomization test",
            "data": "the data randomization test"}.get(data["mode"], f"the {data['mode']} test")
    parts, flags = [], []
    for m, e in data["methods"].items():
        v, at = e["verdict"], ev[m]["at"]
        word = "passes" if v["passes"] else "fails"
        if at is None:
            parts.append(f"{m} {word} (similarity undefined at every step)")
            continue
        ci = ", no interval" if at["ci_low"] is None else f", 95% CI [{at['ci_low']:.2f}, {at['ci_high']:.2f}]"
        parts.append(f"{m} {word} ({v['metric']} {at['mean']:.2f} at {at['step']}, n = {at['n']}{ci}; "
                     f"threshold {v['threshold']:g})")
        flags.append(red.undefined_steps(f"{m}'s {v['metric']}", ev[m]["defined"], ev[m]["n"], data["steps"]))
        if at["n"] < 2:
            flags.append(red.flag("single_image", f"One image: {m}'s verdict rests on n = {at['n']} image, so it has "
                                                  "no interval; check more images before trusting it.", method=m,
                                  n=at["n"]))
        if at["ci_low"] is not None and at["ci_low"] <= v["threshold"] <= at["ci_high"]:
            flags.append(red.flag("verdict_uncertain",
                                  f"Uncertain verdict: {m} {word} on a mean of {at['mean']:.3f} whose 95% interval "
                                  f"[{at['ci_low']:.3f}, {at['ci_high']:.3f}] (n = {at['n']}) contains the threshold "
                                  f"{v['threshold']:g}; more images would be needed to decide.",
                                  method=m, mean=at["mean"], ci=[at["ci_low"], at["ci_high"]], n=at["n"]))
    headline = f"In {test}: " + "; ".join(parts) + "." if parts else "No method was checked."
    return headline, [f for f in flags if f]


def write_json(result: SanityResult, path: str | Path) -> Path:
    """Write ``sanity.json``."""
    path = Path(path)
    path.write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    return path


def save_report(result: SanityResult, out_dir: str | Path, *, images: torch.Tensor | np.ndarray | None = None,
                image_names: Sequence[str] | None = None, model_name: str = "model",
                extra: dict | None = None) -> Path:
    """Write ``sanity.json``, ``figure_<i>.png`` per kept image, ``curves.png`` and ``index.html`` into
    ``out_dir``; returns the path of ``index.html``. ``images`` (display images, [0, 1] or uint8) go beside the
    maps; ``extra`` (e.g. the data test's accuracies) is shown and stored in ``sanity.json``."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json()
    if extra:
        data["extra"] = extra
    data["headline"], data["flags"] = sanity_answer(data)
    (out / "sanity.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    kept = next(iter(result.original_maps.values())).shape[0] if result.original_maps else 0
    names = list(image_names) if image_names is not None else [f"image {i}" for i in range(len(result.target)
                                                                                            if result.target is not None
                                                                                            else kept)]
    figures = []
    for i in range(kept):
        disp = None if images is None else images[i:i + 1]
        figure(result, i, out / f"figure_{i}.png", disp, title=f"{result.mode}: {names[i] if i < len(names) else i}")
        figures.append({"file": f"figure_{i}.png", "name": names[i] if i < len(names) else f"image {i}"})
    curves(result, out / "curves.png")
    env = Environment(loader=PackageLoader("interpretorch.sanity", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else v)
    html = env.get_template("index.html").render(r=data, figures=figures, model=model_name, images=names,
                                                 answer=answer_html(data["headline"], data["flags"]),
                                                 settings=settings_html((data.get("extra") or {}).get("settings")),
                                                 answer_css=ANSWER_CSS, cbar=colorbar_html(
                                                     0, "99th pct", "gray", "each map: |attribution| from 0 (black) "
                                                     "to its own 99th percentile (white, clipped above)"))
    path = out / "index.html"
    path.write_text(html, encoding="utf-8")
    return path
