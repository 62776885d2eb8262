"""HTML report per dissected layer: the detector headline, a bar chart of detectors per concept, and per unit
its top-activating images with the thresholded region outlined."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jinja2 import Environment, PackageLoader, select_autoescape
from torch import nn

from interpretorch.capture import capture
from interpretorch.core import model_device, rows_per_pass
from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.dissect.run import Dissection, LayerDissection

CATEGORY_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f"]


def file_stem(layer: str) -> str:
    """A file-name-safe stem for a layer name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", layer) or "layer"


def _bar_chart(ld: LayerDissection, path: Path) -> bool:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concepts = ld.summary()["detectors_per_concept"]
    if not concepts:
        return False
    names = list(concepts)
    colors = [CATEGORY_COLORS[ld.categories.index(n.split("/", 1)[0]) % len(CATEGORY_COLORS)] for n in names]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * len(names) + 1.5), 3.2), dpi=100)
    ax.bar(range(len(names)), [concepts[n] for n in names], color=colors)
    ax.set_xticks(range(len(names)), [n.split("/", 1)[1] for n in names], rotation=70, fontsize=8)
    ax.set_ylabel("detectors (units)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=CATEGORY_COLORS[i % len(CATEGORY_COLORS)])
               for i, c in enumerate(ld.categories) if any(n.startswith(c + "/") for n in names)]
    ax.legend(handles, [c for c in ld.categories if any(n.startswith(c + "/") for n in names)], fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def outline(region: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask (inside pixels with a 4-neighbour outside)."""
    pad = np.pad(region, 1)
    inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    return region & ~inner


def draw_outline(img: np.ndarray, region: np.ndarray, colors: tuple = ((255, 230, 0), (0, 0, 0))) -> np.ndarray:
    """``img`` with the boundary of the bool mask ``region`` drawn dashed in two colours (yellow and black by
    default), so the outline shows on light and dark images alike; returns the image (changed in place)."""
    edge = outline(region)
    ys, xs = np.nonzero(edge)
    first = ((ys + xs) // 3) % 2 == 0
    img[ys[first], xs[first]] = colors[0]
    img[ys[~first], xs[~first]] = colors[1]
    return img


def layer_answer(summary: dict, images: int, units_shown: list[dict]) -> tuple[str, list[dict]]:
    """A dissected layer's headline (detectors and concepts at the IoU threshold, over n images) and its red
    flags (top-activating images where no pixel passes the unit's threshold, so nothing is outlined, and why: the
    upsampling lowered an isolated peak, or the image's peak is not above the threshold at all)."""
    from interpretorch.core import flags as red

    s = summary
    best = max((u["iou"] for u in units_shown), default=None)
    text = (f"{s['layer']}: {s['detectors']} of {s['units']} units are detectors (IoU \u2265 {s['iou_threshold']:g}) "
            f"covering {s['unique_concepts']} concept(s), on {images} image(s)"
            + (f"; the best unit reaches IoU {best:.3f}." if best is not None else "."))
    flags = []
    empty = [u for u in units_shown if u.get("empty_regions")]
    if empty:
        note = (f"No region outlined: {len(empty)} of the {len(units_shown)} units shown have top-activating images "
                f"where no upsampled pixel passes the unit's threshold ({sum(u['empty_regions'] for u in empty)} "
                f"image(s) in all), so those images show no region.")
        lowered = sum(u.get("empty_by_upsampling", 0) for u in empty)
        below = sum(u.get("empty_below_threshold", 0) for u in empty)
        if lowered:
            note += (f" On {lowered} of them the unit does fire above its threshold on the feature map, but the "
                     f"bilinear upsampling to the image lowers its isolated peak below the threshold.")
        if below:
            note += (f" On {below} the unit's peak is not above its threshold: fewer images than the strip shows "
                     f"exceed it, and the strip is filled with the next highest.")
        flags.append(red.flag("empty_regions", note, units=[u["unit"] for u in empty], layer=s["layer"],
                              by_upsampling=lowered, below_threshold=below))
    if s["detectors"] == 0:
        flags.append(red.flag("no_detectors", f"No detectors: no unit of {s['layer']} reaches IoU "
                                              f"{s['iou_threshold']:g} with any concept on these {images} images.",
                              layer=s["layer"]))
    return text, flags


def write_index(out_dir: str | Path, result: Dissection, model_name: str = "model") -> Path:
    """Write ``out_dir/index.html`` (every dissected layer with its headline, linking its page) and
    ``report.json`` (the headlines and flags of the layers whose pages exist); returns the index's path."""
    out = Path(out_dir)
    pages = []
    for name in result.layers:
        stem = file_stem(name)
        info = out / f"{stem}_files" / "answer.json"
        if (out / f"{stem}.html").exists() and info.exists():
            pages.append({"layer": name, "page": f"{stem}.html", **json.loads(info.read_text())})
    flags = [{**f, "text": f"{p['layer']}: {f['text']}"} for p in pages for f in p["flags"]]
    headline = (f"Network Dissection of {model_name} on {result.images} image(s): " +
                "; ".join(f"{p['layer']} has {p['detectors']}/{p['units']} detectors" for p in pages) + ".")
    (out / "report.json").write_text(json.dumps({"headline": headline, "flags": flags,
                                                 "layers": {p["layer"]: p for p in pages}}, indent=2))
    env = Environment(loader=PackageLoader("interpretorch.dissect", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    from interpretorch.report.answer import ANSWER_CSS, answer_html

    html = env.get_template("index.html").render(pages=pages, model_name=model_name, images=result.images,
                                                 quantile=result.quantile, answer=answer_html(headline, flags),
                                                 answer_css=ANSWER_CSS)
    path = out / "index.html"
    path.write_text(html, encoding="utf-8")
    return path


def write_layer_report(result: Dissection, layer: str, model: nn.Module, dataset: BrodenDataset,
                       out_dir: str | Path, *, max_units: int = 64, batch_size: int | None = None,
                       model_name: str = "model", tally_file: str | None = None, site: str | None = None) -> Path:
    """Write ``out_dir/<layer>.html`` (and its images); returns the page's path. The model is left unchanged.

    ``site`` is the module whose output the units are (default ``layer``; a rotated copy's ``<layer>.rotated``).
    """
    from PIL import Image

    ld = result.layers[layer]
    out = Path(out_dir)
    stem = file_stem(layer)
    img_dir = out / f"{stem}_files"
    img_dir.mkdir(parents=True, exist_ok=True)
    chart = f"{stem}_files/concepts.png" if _bar_chart(ld, img_dir / "concepts.png") else None

    label, score = ld.best()
    cat_of = ld.tally.label_category.cpu()
    order = sorted(range(ld.units), key=lambda u: (-float(score[u]), u))[:max_units]
    wanted = sorted({int(i) for u in order for i in ld.top_indices[u].tolist() if i >= 0})
    device = model_device(model)
    bs = rows_per_pass(batch_size, device)
    acts: dict[int, torch.Tensor] = {}
    site = site or layer
    with capture(model, [site], grad=False) as rec, torch.no_grad():
        for s in range(0, len(wanted), bs):
            idx = wanted[s:s + bs]
            batch = collate([dataset[i] for i in idx])
            rec.calls.clear()
            model(batch["image"].to(device))
            a = rec[site][:, order].float().cpu()
            for j, i in enumerate(idx):
                acts[i] = a[j]
    units = []
    for pos, u in enumerate(order):
        t = float(ld.thresholds[u])
        tiles = []
        empty = lowered = 0
        for i in (int(v) for v in ld.top_indices[u].tolist() if v >= 0):
            img = dataset.load_image(i).copy()
            a = acts[i][pos][None, None]
            up = F.interpolate(a, size=img.shape[:2], mode="bilinear", align_corners=False)[0, 0].numpy()
            region = up > t
            empty += not region.any()
            lowered += not region.any() and float(a.max()) > t  # above threshold on the map, not once upsampled
            dim = np.where(region[..., None], img, (img * 0.45).astype(np.uint8))
            tiles.append(draw_outline(dim, region))
        if not tiles:
            continue
        gap = np.full((tiles[0].shape[0], 3, 3), 255, np.uint8)
        strip = np.concatenate([x for tile in tiles for x in (tile, gap)][:-1], axis=1)
        Image.fromarray(strip).save(img_dir / f"unit{u:04d}.png")
        units.append({"unit": u, "label": ld.label_names[label[u]], "category": ld.categories[int(cat_of[label[u]])],
                      "iou": float(score[u]), "threshold": t, "detector": float(score[u]) >= ld.iou_threshold,
                      "strip": f"{stem}_files/unit{u:04d}.png", "empty_regions": empty,
                      "empty_by_upsampling": lowered, "empty_below_threshold": empty - lowered,
                      "images": [dataset.info.rows[int(i)].image for i in ld.top_indices[u].tolist() if i >= 0]})
    from interpretorch.report.answer import ANSWER_CSS, answer_html

    summary = ld.summary()
    headline, flags = layer_answer(summary, result.images, units)
    (img_dir / "answer.json").write_text(json.dumps({"headline": headline, "flags": flags,
                                                     "detectors": summary["detectors"], "units": summary["units"],
                                                     "unique_concepts": summary["unique_concepts"]}, indent=2))
    env = Environment(loader=PackageLoader("interpretorch.dissect", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("layer.html").render(
        answer=answer_html(headline, flags), answer_css=ANSWER_CSS, s=summary, units=units, shown=len(units), chart=chart, model_name=model_name,
        dataset=str(dataset.root), images=result.images, quantile=result.quantile,
        tally=tally_file or f"{stem}_tally.csv")
    page = out / f"{stem}.html"
    page.write_text(html, encoding="utf-8")
    write_index(out, result, model_name)
    return page


def _answer(headline: str, flags: list[dict]) -> dict:
    """The template context of a page's answer block (its HTML and the CSS it needs)."""
    from interpretorch.report.answer import ANSWER_CSS, answer_html

    return {"html": answer_html(headline, flags), "css": ANSWER_CSS}


def _render(name: str, **context) -> str:
    env = Environment(loader=PackageLoader("interpretorch.dissect", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    return env.get_template(name).render(**context)


def _series_chart(points: list[dict], layers: list[str], x_label: str, path: Path, log_x: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["x"] for p in points]
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=100)
    for i, name in enumerate(layers):
        color = CATEGORY_COLORS[i % len(CATEGORY_COLORS)]
        axes[0].plot(xs, [p["layers"][name]["detectors"] for p in points], "o-", color=color, label=name)
        axes[1].plot(xs, [p["layers"][name]["unique_concepts"] for p in points], "o-", color=color, label=name)
    for ax, what in zip(axes, ("detectors (units)", "unique concepts detected")):
        ax.set_xlabel(x_label)
        ax.set_ylabel(what)
        if log_x and min(xs) >= 0:
            ax.set_xscale("symlog", linthresh=1.0)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def series_answer(points: list[dict], kind: str, x_label: str, seed: int | None = None
                  ) -> tuple[str, list[dict]]:
    """A series page's headline (per layer, detectors at the first and the last point, with the direction) and
    its red flags (a rotation: one draw of Q, and layers whose detector count does not fall)."""
    from interpretorch.core import flags as red

    first, last = points[0], points[-1]
    parts, flags = [], []
    for name in first["layers"]:
        a, b = first["layers"][name], last["layers"][name]
        way = "falls" if b["detectors"] < a["detectors"] else "rises" if b["detectors"] > a["detectors"] else \
            "stays"
        parts.append(f"{name} {a['detectors']} \u2192 {b['detectors']} of {a['units']} ({way}; unique concepts "
                     f"{a['unique_concepts']} \u2192 {b['unique_concepts']})")
        if kind == "rotation" and a["detectors"] > 0:
            flags.append(red.no_fall(f"the detector count of {name}", a["detectors"], b["detectors"],
                                     f"{x_label} {first['x']:g}", f"{x_label} {last['x']:g}"))
    iou = next(iter(first["layers"].values()))["iou_threshold"]
    head = (f"Detectors (IoU \u2265 {iou:g}, {first['images']} images) from {x_label} {first['x']:g} to "
            f"{x_label} {last['x']:g}: " + "; ".join(parts) + ".")
    if kind == "rotation" and seed is not None:
        flags.insert(0, red.one_draw("the rotated counts", seed))
    return head, [f for f in flags if f]


def compare_answer(runs: list[tuple[str, dict]], entries: list[dict]) -> tuple[str, list[dict]]:
    """The comparison page's headline (per run, its layer with the most unique concepts) and its red flags
    (runs on different IoU thresholds or numbers of images, whose counts do not compare)."""
    from interpretorch.core import flags as red

    parts = []
    for name, summary in runs:
        layer, s = max(summary["layers"].items(), key=lambda kv: kv[1]["unique_concepts"])
        parts.append(f"{name} at {layer} ({s['unique_concepts']} unique concepts, {s['detectors']} of {s['units']} "
                     f"units are detectors)")
    head = "Most unique concepts per run: " + "; ".join(parts) + "."
    flags = []
    thresholds = sorted({e["iou_threshold"] for e in entries})
    if len(thresholds) > 1:
        flags.append(red.flag("settings_differ", f"Different IoU thresholds ({', '.join(map(str, thresholds))}): "
                                                 f"detector counts are not comparable across these runs.",
                              setting="iou_threshold", values=thresholds))
    images = sorted({e["images"] for e in entries if e["images"] is not None})
    if len(images) > 1:
        flags.append(red.flag("settings_differ", f"Different numbers of images ({', '.join(map(str, images))}): "
                                                 f"counts from different probe sets are not comparable.",
                              setting="images", values=images))
    return head, flags


def write_series_report(points: list[dict], out_dir: str | Path, kind: str, *, x_label: str, title: str,
                        meta: str, seed: int | None = None) -> Path:
    """Write ``kind``.json (with its ``headline`` and ``flags``), ``kind``.png and ``kind``.html for dissections
    along one axis; returns the page.

    ``points`` (in axis order): ``{"x": number, "name": str, "layers": {layer: LayerDissection.summary()},
    "images": int, "folder": str}``. ``kind`` is "rotation" (x = alpha; ``seed``: the seed of Q) or
    "checkpoints" (x = training step).
    """
    import json

    if not points:
        raise ValueError("no dissections to report")
    out = Path(out_dir)
    layers = list(points[0]["layers"])
    headline, flags = series_answer(points, kind, x_label, seed)
    (out / f"{kind}.json").write_text(json.dumps({"x_label": x_label, "headline": headline, "flags": flags,
                                                  "seed": seed, "points": points}, indent=2))
    _series_chart(points, layers, x_label, out / f"{kind}.png", log_x=kind == "checkpoints")
    first = points[0]
    header = [x_label, "run"] + [f"{n} detectors (unique)" for n in layers]
    rows = [[f"{p['x']:g}", p["name"]] + [f"{p['layers'][n]['detectors']}/{p['layers'][n]['units']} "
                                          f"({p['layers'][n]['unique_concepts']})" for n in layers] for p in points]
    categories = list(first["layers"][layers[0]]["detectors_per_category"])
    header2 = [x_label, "layer"] + categories
    rows2 = [[f"{p['x']:g}", n] + [f"{p['layers'][n]['detectors_per_category'][c]} "
                                  f"({p['layers'][n]['unique_concepts_per_category'][c]})" for c in categories]
             for p in points for n in layers]
    html = _render("experiment.html", title=title, meta=meta, answer=_answer(headline, flags), chart=f"{kind}.png",
                   title2="Per category: detectors (unique concepts)", header2=header2, rows2=rows2,
                   table_note="Per layer: detectors / units (unique concepts with at least one detector). Each row's "
                              "folder holds its tally CSVs and summary.json.",
                   header=header, rows=rows, left=2, files=[f"{kind}.json"] + [
                       f"{p['folder']}/{f}" for p in points
                       for f in ["summary.json"] + [f"{file_stem(n)}.html" for n in layers
                                                    if (out / p["folder"] / f"{file_stem(n)}.html").exists()]])
    page = out / f"{kind}.html"
    page.write_text(html, encoding="utf-8")
    return page


def write_compare_report(runs: list[tuple[str, dict]], out_dir: str | Path) -> Path:
    """Write compare.json, compare.png and compare.html: unique detectors per category for every layer of every
    dissection (``(name, summary.json contents)`` pairs, e.g. several models or training sets); returns the page."""
    import json

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("no dissections to compare")
    out = Path(out_dir)
    categories: list[str] = []
    entries = []
    for name, summary in runs:
        for layer, s in summary["layers"].items():
            for c in s["unique_concepts_per_category"]:
                if c not in categories:
                    categories.append(c)
            entries.append({"run": name, "layer": layer, "units": s["units"], "detectors": s["detectors"],
                            "unique_concepts": s["unique_concepts"], "iou_threshold": s["iou_threshold"],
                            "images": summary.get("images"),
                            "unique_per_category": s["unique_concepts_per_category"],
                            "detectors_per_category": s["detectors_per_category"]})
    headline, flags = compare_answer(runs, entries)
    (out / "compare.json").write_text(json.dumps(entries, indent=2))
    (out / "compare_answer.json").write_text(json.dumps({"headline": headline, "flags": flags}, indent=2))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(entries) + 2.0), 3.8), dpi=100)
    bottom = np.zeros(len(entries))
    for ci, c in enumerate(categories):
        vals = np.array([e["unique_per_category"].get(c, 0) for e in entries], dtype=float)
        ax.bar(range(len(entries)), vals, bottom=bottom, color=CATEGORY_COLORS[ci % len(CATEGORY_COLORS)], label=c)
        bottom += vals
    ax.set_xticks(range(len(entries)), [f"{e['run']}\n{e['layer']}" for e in entries], rotation=70, fontsize=7)
    ax.set_ylabel("unique concepts detected")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)
    note = "Unique concepts: concepts with at least one detector, per category."
    header = ["run", "layer", "units", "detectors", "unique"] + [f"unique {c}" for c in categories]
    rows = [[e["run"], e["layer"], e["units"], e["detectors"], e["unique_concepts"]]
            + [e["unique_per_category"].get(c, 0) for c in categories] for e in entries]
    html = _render("experiment.html", title="unique detectors per layer and model",
                   meta=f"{len(runs)} dissections compared.", answer=_answer(headline, flags), chart="compare.png",
                   table_note=note, header=header, rows=rows, left=2, files=["compare.json", "compare_answer.json"])
    page = out / "compare.html"
    page.write_text(html, encoding="utf-8")
    return page


def relevance_answer(layer: str, images_seen: int, rows: list[dict]) -> tuple[str, list[dict]]:
    """The relevance page's headline (how many of each unit's top images by relevance are also among its
    top-activating ones) and its red flags (units whose largest relevance is not positive)."""
    from interpretorch.core import flags as red

    shared = [len(set(r["relevance_images"]) & set(r["activation_images"])) for r in rows]
    n = max((len(r["relevance_images"]) for r in rows), default=0)
    if not rows:
        return f"{layer}: no unit shown ({images_seen} image(s) streamed).", []
    head = (f"{layer}, over {images_seen} image(s): the top {n} images by relevance for the predicted class and "
            f"the top {n} by activation share {sum(shared) / len(shared):.1f} image(s) per unit on average "
            f"(from {min(shared)} to {max(shared)}, {len(rows)} unit(s)); "
            f"{sum(s == 0 for s in shared)} unit(s) share none.")
    flags = []
    negative = [r["unit"] for r in rows if not r["relevance"] or max(r["relevance"]) <= 0]
    if negative:
        flags.append(red.flag("no_positive_relevance",
                              f"Never supports the decision: unit(s) {', '.join(map(str, negative))} have no image "
                              f"with positive relevance for the predicted class; their 'most relevant' images are "
                              f"those where they lower it least.", units=negative, layer=layer))
    return head, flags


def write_relevance_page(model: nn.Module, dataset: BrodenDataset, layer: str, out_dir: str | Path, *,
                         units: list[int] | None = None, n: int = 8, batch_size: int | None = None,
                         resume: bool = False, stem: str | None = None) -> tuple[Path, object]:
    """Write ``<stem>_relevance.html`` (its headline and flags first; per unit of ``units``, default all, its
    reference images chosen by relevance, with where it mattered and a colour bar, and by activation) and
    ``<stem>_relevance.json``; returns the page's path and the reference pass."""
    import html as H

    from interpretorch.dissect.relevance import relevance_strips
    from interpretorch.report.answer import ANSWER_CSS, answer_html, colorbar_html

    out = Path(out_dir)
    stem = stem or layer.replace(".", "_")
    rows, ref = relevance_strips(model, dataset, layer, out, units=units, n=n, batch_size=batch_size,
                                 resume=resume, stem=stem)
    headline, flags = relevance_answer(layer, int(ref.images_seen), rows)
    (out / f"{stem}_relevance.json").write_text(json.dumps({"layer": layer, "images": int(ref.images_seen),
                                                            "headline": headline, "flags": flags, "units": rows},
                                                           indent=2))
    bar = colorbar_html("-p99", "+p99", "bwr", "each image on its own scale: \u00b1 the 99th percentile of its "
                                               "|relevance| (white: 0)")
    body = "".join(
        f"<tr><td>{r['unit']}</td><td>{' '.join(f'{v:.3g}' for v in r['relevance'])}</td><td>"
        + (f"<div class=\"withbar\"><img class=\"map\" src=\"{H.escape(r['strips']['relevance'])}\" "
           f"alt=\"unit {r['unit']} by relevance\">{bar}</div>" if "relevance" in r["strips"] else "")
        + (f"<img src=\"{H.escape(r['strips']['activation'])}\" alt=\"unit {r['unit']} by activation\">"
           if "activation" in r["strips"] else "") + "</td></tr>"
        for r in rows)
    page = out / f"{stem}_relevance.html"
    page.write_text(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
        "content=\"width=device-width, initial-scale=1\"><title>"
        f"{H.escape(layer)}: reference images by relevance</title><style>body{{font-family:sans-serif;"
        "margin:1.5em} td{vertical-align:top;padding:4px 8px;border-bottom:1px solid #eee} "
        "img{max-width:100%;height:auto} .scroll{overflow-x:auto;max-width:100%}"
        f"{ANSWER_CSS}</style></head><body>"
        f"<h1>{H.escape(layer)}: reference images by relevance</h1>{answer_html(headline, flags)}"
        f"<p>Relevance maximisation (Achtibat et al. 2023) over {ref.images_seen} images: per unit, the images where "
        "it had the most LRP relevance (epsilon_plus, summed over positions) for the class the model predicted, "
        "with where it mattered (the input relevance conditioned on the unit: red positive, blue negative, each "
        "image on its own scale, clipped at the 99th percentile of its |relevance|); below them its top-activating "
        "images, as on the layer page.</p><div class=\"scroll\"><table><tr><th>unit</th><th>relevance of the images"
        f"</th><th>by relevance / by activation</th></tr>{body}</table></div></body></html>", encoding="utf-8")
    return page, ref
