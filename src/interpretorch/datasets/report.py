"""The report of a dataset run: the summary table, paired tests and plots first (``index.html``), then one
gallery page per method with a fixed number of images: the best, the worst and a random sample by a chosen
metric. Only the shown images are read again and explained again (or their saved maps are used); never a
page of every image."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, select_autoescape
from torch import nn

from interpretorch.datasets.streams import ImageSet, ImageStream, Record, collate
from interpretorch.datasets.summary import metric_values
from interpretorch.datasets.writer import load_maps
from interpretorch.explanation import Explanation
from interpretorch.models.preprocess import Preprocess

PER_SECTION = 8  # images per section (best, worst, random): every gallery page shows at most 3 x this
OUTLINE = (1.0, 1.0, 1.0)  # a class region's outline: white, seen on the overlay's colours and on red objects


def _env() -> Environment:
    env = Environment(loader=PackageLoader("interpretorch.datasets", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=4: "-" if v is None else f"{v:.{d}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{d}f}"
    env.filters["pval"] = lambda v: "-" if v is None else (f"{v:.2e}" if v < 1e-3 else f"{v:.4f}")
    return env


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("+", "p"))  # gradcam++ -> gradcampp


def pick_gallery(values: Mapping[int, float], better: str, per_section: int = PER_SECTION,
                 seed: int = 0) -> dict[str, list[int]]:
    """The images to show for one method: {"best", "worst", "random"}, each up to ``per_section`` positions."""
    order = sorted(values, key=lambda i: (values[i], i), reverse=(better == "higher"))
    rng = np.random.default_rng(seed)
    sample = sorted(int(i) for i in rng.choice(sorted(values), size=min(per_section, len(values)), replace=False)) \
        if values else []
    return {"best": order[:per_section], "worst": order[::-1][:per_section], "random": sample}


def _metric_panels(summary: Mapping[str, Any], path: Path, draw: Callable[[Any, str, list[str]], None]) -> Path | None:
    """A figure of one panel per metric of ``summary``, each drawn by ``draw(axes, metric, methods)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, methods = summary["metrics"], summary["methods"]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.2 * len(metrics), 4), 3.4), squeeze=False)
    for ax, k in zip(axes[0], metrics):
        draw(ax, k, methods)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_figure(summary: Mapping[str, Any], path: Path) -> Path | None:
    """One panel per metric: each method's mean with its 95% bootstrap interval."""
    def draw(ax: Any, k: str, methods: list[str]) -> None:
        ys = [summary["table"][m][k] for m in methods]
        pos = [i for i, c in enumerate(ys) if c["mean"] is not None]
        mean = [ys[i]["mean"] for i in pos]
        err = [[ys[i]["mean"] - ys[i]["ci_low"] for i in pos], [ys[i]["ci_high"] - ys[i]["mean"] for i in pos]]
        ax.bar(pos, mean, yerr=err, capsize=4, color="#7aa6d6")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{summary['labels'][k]} ({summary['directions'][k]} better)", fontsize=9)

    return _metric_panels(summary, path, draw)


def distribution_figure(table: Mapping[str, list], summary: Mapping[str, Any], path: Path) -> Path | None:
    """One panel per metric: the distribution of per-image values of each method (box plots)."""
    def draw(ax: Any, k: str, methods: list[str]) -> None:
        ax.boxplot([list(metric_values(table, m, k).values()) or [np.nan] for m in methods], showfliers=False)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(summary["labels"][k], fontsize=9)

    return _metric_panels(summary, path, draw)


def _pictures(model: nn.Module, data: ImageSet, preprocess: Preprocess, method: str, records: list[Record],
              targets: list[int | None], layer: str | None, options: Mapping[str, Any], batch_size: int | None,
              out: Path, saved: Mapping[int, np.ndarray]) -> dict[int, str]:
    """Overlay PNGs of ``method`` on ``records`` (saved maps when there are, else explained again)."""
    from PIL import Image

    from interpretorch.core import model_device
    from interpretorch.attribution.registry import get_method
    from interpretorch.run import run

    if not records:
        return {}
    stream = ImageStream(data, preprocess, records)
    files: dict[int, str] = {}
    for start in range(0, len(records), PER_SECTION):
        chunk = list(range(start, min(len(records), start + PER_SECTION)))
        batch = collate([stream[i] for i in chunk])
        ok = [k for k, e in enumerate(batch["error"]) if e is None]
        if not ok:
            continue
        display = batch["image"][ok]
        idx = [batch["index"][k] for k in ok]
        if all(i in saved for i in idx):
            maps = torch.from_numpy(np.stack([saved[i] for i in idx]))
            exp = Explanation(maps=maps, method=method)
        else:
            tg = [targets[chunk[k]] for k in ok]
            x = preprocess.normalize(display).to(model_device(model))
            res = run(model, x, [method], tg if all(t is not None for t in tg) else "top1",
                      layer if get_method(method).needs_layer else None, batch_size=batch_size,
                      options={method: dict(options)} if options else None)
            exp = res.explanations[method]
        pix = exp.maps.dim() == 4
        pictures = exp.visualize("abs_grayscale") if pix else exp.overlay(display)
        for k, i in enumerate(idx):
            name = f"images/{_safe(method)}_{i:07d}.png"
            Image.fromarray(pictures[k]).save(out / name)
            files[i] = name
        input_dir = out / "images"
        for k, i in enumerate(idx):
            f = input_dir / f"input_{i:07d}.png"
            if not f.exists():
                Image.fromarray((display[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(f)
    return files


def _predicted_region(model: nn.Module, preprocess: Preprocess, image: torch.Tensor, label: int) -> torch.Tensor:
    """The pixels (H, W) bool a segmentation model predicts as class ``label`` on one display ``image``."""
    from interpretorch.capture import frozen
    from interpretorch.core.device import model_device
    from interpretorch.core.target_objects import segmentation_logits

    with frozen(model), torch.no_grad():
        logits = segmentation_logits(model(preprocess.normalize(image[None]).to(model_device(model))))
    region = (logits.argmax(1) == int(label)).float()
    if tuple(region.shape[-2:]) != tuple(image.shape[-2:]):
        region = torch.nn.functional.interpolate(region[None], size=tuple(image.shape[-2:]), mode="nearest")[0]
    return region[0].cpu() > 0.5


def _task_pictures(data: ImageSet, preprocess: Preprocess, method: str, units: Sequence[int],
                   table: Mapping[str, list], out: Path, saved: Mapping[int, np.ndarray], class_names: Sequence[str],
                   model: nn.Module | None = None) -> tuple[dict[int, str], dict[int, str], dict[int, str]]:
    """For targets ``units`` of a task run: the overlay PNG of ``method``'s saved map, the image with the target's
    object outlined (a detection's box; a class region's predicted pixels, recomputed with ``model``) and a
    caption (class, score), each by unit."""
    from PIL import Image

    from interpretorch.datasets.tasks import UNIT
    from interpretorch.imageops import draw_box, draw_outline

    row = {u: i for i, (u, m) in enumerate(zip(table["image"], table["method"])) if m == method}
    by_index = {r.index: r for r in data.records}
    stream = ImageStream(data, preprocess, [by_index[u // UNIT] for u in units])
    files, inputs, captions = {}, {}, {}
    for k, u in enumerate(units):
        item = stream[k]
        if item["error"] is not None or u not in saved:
            continue
        i = row[u]
        label = table["target"][i]
        name = class_names[label] if label is not None and 0 <= label < len(class_names) else f"class {label}"
        score = table.get("score", [None] * len(table["image"]))[i]
        captions[u] = name + (f" {score:.2f}" if score is not None else "")
        image = item["image"]
        box = [table.get(c, [None] * len(table["image"]))[i] for c in ("box_x0", "box_y0", "box_x1", "box_y1")]
        region = None
        if all(v is not None for v in box):
            image = draw_box(image, box)
        elif model is not None and label is not None and \
                table.get("region_fraction", [None] * len(table["image"]))[i] is not None:
            region = _predicted_region(model, preprocess, image, label)  # the pixels the map explains
            image = draw_outline(image, region, OUTLINE)
        f_in = f"images/input_{u:011d}.png"
        Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(out / f_in)
        exp = Explanation(maps=torch.from_numpy(saved[u][None]), method=method)
        f_map = f"images/{_safe(method)}_{u:011d}.png"
        picture = exp.overlay(image[None])[0]
        if region is not None:  # a one-pixel outline fades in the 50% blend: drawn again on top
            on_top = draw_outline(torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0, region, OUTLINE)
            picture = (on_top.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(picture).save(out / f_map)
        files[u], inputs[u] = f_map, f_in
    return files, inputs, captions


def _gallery_colorbar(method: str) -> str:
    """The colour bar of a gallery's maps: |attribution| in grayscale to each map's 99th percentile for pixel
    attributions, the overlay's colormap over each map's normalised range for region maps."""
    from interpretorch.attribution.registry import get_method
    from interpretorch.report.answer import colorbar_html

    if get_method(method).kind == "pixel":
        return colorbar_html(0, "99th pct", "gray", "each map: |attribution| summed over channels, from 0 to its "
                                                    "own 99th percentile (clipped above)")
    return colorbar_html("min", "max", "jet", "each map normalised to [0, 1] between its own minimum and maximum "
                                              "(blended over the image at 50%)")


def write_dataset_report(out: str | Path, summary: Mapping[str, Any] | None, table: Mapping[str, list],
                         manifest: Mapping[str, Any], model: nn.Module, data: ImageSet, preprocess: Preprocess,
                         *, methods: Sequence[str], metric: str | None = None, layer: str | None = None,
                         options: Mapping[str, Mapping[str, Any]] | None = None, batch_size: int | None = None,
                         seed: int = 0, per_section: int = PER_SECTION, task: Any = None,
                         class_names: Sequence[str] = ()) -> Path:
    """Write ``index.html`` (summary, tests, plots, links) and ``gallery/<method>.html`` pages; returns the index.
    A ``task`` run (``datasets.tasks``) ranks and shows its targets (each detection with its box, each class
    region), from the maps it saved."""
    out = Path(out)
    rows = table
    if task is not None and table:  # the statistics count targets: each row's unit stands for its image
        keep = [i for i, u in enumerate(table.get("unit", [])) if u is not None]
        table = {**{c: [v[i] for i in keep] for c, v in table.items()}, "image": [table["unit"][i] for i in keep]}
    (out / "images").mkdir(exist_ok=True)
    env = _env()
    metrics = list(summary["metrics"]) if summary else []
    if metric is None:
        metric = next((m for m in ("deletion", "insertion", "average_drop") if m in metrics),
                      metrics[0] if metrics else None)
    if metric is not None and metric not in metrics:
        raise ValueError(f"gallery metric {metric!r} was not computed; choose one of {', '.join(metrics)}")
    figures = {}
    if summary:
        if summary_figure(summary, out / "images" / "summary.png"):
            figures["summary"] = "images/summary.png"
        if distribution_figure(table, summary, out / "images" / "distributions.png"):
            figures["distributions"] = "images/distributions.png"
    by_index = {r.index: r for r in data.records}
    if task is not None:
        from interpretorch.datasets.tasks import UNIT

        by_index = {u: by_index[u // UNIT] for u in table["image"]}
    target_of = {(i, m): t for i, m, t, e in zip(table["image"], table["method"], table["target"], table["error"])
                 if e is None}
    pages = {}
    for m in methods:
        if metric is not None:
            vals = metric_values(table, m, metric)
            better = summary["directions"][metric]
        else:  # explain only: a random sample
            vals = {i: 0.0 for (i, mm) in target_of if mm == m}
            better = "higher"
        picks = pick_gallery(vals, better, per_section, seed)
        if metric is None:
            picks = {"random": picks["random"]}
        shown = sorted({i for v in picks.values() for i in v})
        saved = load_maps(out, m, shown) if manifest.get("save_maps") or task is not None else {}
        if task is not None:
            files, inputs, captions = _task_pictures(data, preprocess, m, shown, table, out, saved, class_names,
                                                     model)
        else:
            files = _pictures(model, data, preprocess, m, [by_index[i] for i in shown],
                              [target_of.get((i, m)) for i in shown], layer, (options or {}).get(m, {}), batch_size,
                              out, saved)
            inputs = {i: f"images/input_{i:07d}.png" for i in shown}
            captions = {i: target_of.get((i, m)) for i in shown}
        sections = [{"name": name, "images": [{"index": i, "path": by_index[i].path, "map": files.get(i),
                                                "input": inputs.get(i), "value": vals.get(i) if metric else None,
                                                "target": captions.get(i)} for i in idx]}
                    for name, idx in picks.items()]
        page = f"gallery/{_safe(m)}.html"
        (out / "gallery").mkdir(exist_ok=True)
        (out / page).write_text(env.get_template("gallery.html").render(
            method=m, metric=metric, label=summary["labels"][metric] if metric else None, better=better,
            sections=sections, manifest=manifest, cbar=_gallery_colorbar(m)), encoding="utf-8")
        pages[m] = page
    from interpretorch.report.answer import ANSWER_CSS, answer_html, settings_html

    index = out / "index.html"
    index.write_text(env.get_template("dataset.html").render(
        answer=answer_html(summary.get("headline") if summary else f"{manifest.get('images_done', 0)} image(s) "
                           "explained; no metric was computed, so nothing is compared.",
                           summary.get("flags", []) if summary else []),
        answer_css=ANSWER_CSS, settings=settings_html(manifest.get("settings")), s=summary, manifest=manifest, figures=figures, pages=pages, metric=metric,
        failed=[{"path": p, "error": e} for p, e in zip(rows["path"], rows["error"]) if e is not None][:50],
        n_failed=sum(e is not None for e in rows["error"]), task=(summary or {}).get("task") or manifest.get("task"),
        table_file=next((p.name for p in out.glob("per_image.*")), None)), encoding="utf-8")
    return index
