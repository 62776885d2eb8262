"""Render a :class:`~interpretorch.run.RunResult` as files: ``index.html``, ``results.json``, PNG pictures and
the raw maps (``.npy``).

Every picture states its colour scale (a colour bar with the range, per image or shared with ``shared_scale``)
and its map's raw min / max; signed maps are drawn in a diverging colormap centred on zero.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from interpretorch.core import flags as red
from interpretorch.report.answer import ANSWER_CSS, answer_html, settings_html
from interpretorch.report.evaluation import evaluation_section
from interpretorch.report.scales import (Scale, css_gradient, fit_scale, fmt_value, is_signed, overlay,
                                         pixel_signed_scale)


def _env() -> Environment:
    env = Environment(loader=PackageLoader("interpretorch.report", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v, digits=3: "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else v)
    env.filters["short"] = short_class_name
    return env


def short_class_name(name: str | None) -> str:
    """The first of a class's comma-separated synonyms ("loudspeaker, speaker, ..." -> "loudspeaker")."""
    if not name:
        return ""
    return name.split(",")[0].strip()


def _stem(i: int, name: str) -> str:
    return f"{i:03d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:60]


def _file_safe(method: str) -> str:
    """A method name as part of a file name: gradcam++ -> gradcampp."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", method.replace("+", "p"))


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def map_views(explanation: Any) -> list[tuple[str, str, np.ndarray]]:
    """The pictures of one method's maps: (suffix, scale group, (B, H, W) values) per view.

    Pixel attributions get two: |attribution| summed over channels (magnitude) and the signed sum (diverging).
    Region maps get one: diverging when any map has negative values, else sequential (min-max).
    """
    maps = explanation.maps.detach().float().cpu()
    if maps.dim() == 4:
        return [("", "magnitude", maps.abs().sum(1).numpy()), ("_signed", "pixel-diverging", maps.sum(1).numpy())]
    v = explanation.map2d().detach().float().cpu().numpy()
    return [("", "diverging" if any(is_signed(m) for m in v) else "sequential", v)]


def fit_view(group: str, values: list[np.ndarray], shared: bool) -> Scale:
    """The colour scale of one view group (see :func:`map_views`) fitted to ``values``."""
    if group == "pixel-diverging":
        return pixel_signed_scale(values, shared)
    return fit_scale(group, values, shared)


def shared_scales(views: Iterable[list[tuple[str, str, np.ndarray]]], shared_scale: bool) -> dict[str, Scale]:
    """One scale per view group fitted to every map of that group, or none when each map gets its own."""
    if not shared_scale:
        return {}
    pooled: dict[str, list[np.ndarray]] = {}
    for vs in views:
        for _, group, values in vs:
            pooled.setdefault(group, []).extend(values)
    return {g: fit_view(g, v, True) for g, v in pooled.items()}


def _scale_view(scale: Scale) -> dict[str, Any]:
    return {**scale.to_dict(), "css": css_gradient(scale.cmap), "lo_text": fmt_value(scale.lo),
            "hi_text": fmt_value(scale.hi), "mid_text": "0" if scale.signed else None,
            "clipped": scale.view == "magnitude" or (scale.signed and scale.hi < float("inf"))}


def results_dict(result: Any, out_dir: str | Path, *, write_files: bool = True,
                 shared_scale: bool = False) -> dict[str, Any]:
    """Write the run's pictures and maps under ``out_dir`` and return the ``results.json`` structure.

    ``shared_scale``: one colour scale per view across every method and image (so they can be compared),
    instead of each map stretched to its own range.
    """
    from interpretorch.attribution.registry import get_method

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    n = len(result.names)
    target = result.target
    results: dict[str, Any] = {
        "model": result.model_name, "device": result.device,
        "target": str(target.tolist() if hasattr(target, "tolist") else target),
        "method_names": list(result.methods), "images": [], "failed": list(result.failed), "timing": {},
        "steps": [], "scale": "shared" if shared_scale else "per-image",
        "method_kinds": {m: mr.kind for m, mr in result.methods.items()},
        "class_agnostic": [m for m, mr in result.methods.items() if get_method(m).class_agnostic],
        "top_classes": 1 + len(getattr(result, "ranks", {}) or {}),
        "imagenet": len(result.class_names) == 1000}
    if result.layer is not None:
        results["layer"] = result.layer
    task = getattr(result, "task", None)
    if task:
        results["task"] = task
    stems = [_stem(i, name) for i, name in enumerate(result.names)]
    display = result.display
    photos = None
    if display is not None:
        photos = (display.permute(0, 2, 3, 1).detach().cpu().numpy() * 255).round().astype(np.uint8)
    correct = result.correct() if hasattr(result, "correct") else None
    for i, (name, stem) in enumerate(zip(result.names, stems)):
        preds = [{**p, "rank": r + 1} for r, p in enumerate(result.predictions[i])]
        entry: dict[str, Any] = {"name": Path(name).name if "/" in name or "\\" in name else name, "file": name,
                                 "image": None, "predictions": preds, "methods": {}, "ranks": {}}
        if task and i < len(task.get("rows", [])):
            entry["explains"] = task["rows"][i]
        if result.labels is not None:
            lab = result.labels[i]
            entry.update(label=lab, label_name=result.class_name(lab), correct=correct[i])
        if photos is not None:
            entry["image"] = f"images/{stem}.png"
            _save_png(photos[i], out / entry["image"])
        results["images"].append(entry)

    # Every (rank, method) explained, with its pictures' values; scales are fitted per map or per view group.
    runs = [(1, m, mr) for m, mr in result.methods.items()]
    for r, methods in sorted((getattr(result, "ranks", {}) or {}).items()):
        runs += [(r, m, mr) for m, mr in methods.items()]
    views = {(r, m): map_views(mr.explanation) for r, m, mr in runs}
    shared = shared_scales(views.values(), shared_scale)

    for m, mr in result.methods.items():
        results["timing"][m] = {"seconds": mr.seconds, "per_image": mr.seconds / n, "shared_with": mr.shared_with}
    covered: set[str] = set()
    for m, mr in result.methods.items():  # a shared pass is one step, timed once
        if m in covered:
            continue
        step = [m] + [o for o in mr.shared_with if o in result.methods]
        covered.update(step)
        results["steps"].append({"methods": step, "seconds": mr.seconds, "per_image": mr.seconds / n,
                                 "shared": len(step) > 1})
    results["rank_seconds"] = {str(r): sum({id(x): x.seconds for x in ms.values()}.values())
                               for r, ms in (getattr(result, "ranks", {}) or {}).items()}

    for r, m, mr in runs:
        e = mr.explanation
        spec = get_method(m)
        pixel = e.maps.dim() == 4
        base = f"{_file_safe(m)}" + ("" if r == 1 else f"_rank{r}")
        for i, stem in enumerate(stems):
            f = f"{stem}_{base}"
            pics: dict[str, dict[str, Any]] = {}
            for suffix, group, values in views[(r, m)]:
                v = values[i]
                scale = shared.get(group) or fit_view(group, [v], False)
                image = None if pixel or photos is None else photos[i]
                if image is not None and image.shape[:2] != v.shape:
                    image = None
                _save_png(overlay(v, image, scale), out / "images" / f"{f}{suffix}.png")
                pics[suffix] = {"path": f"images/{f}{suffix}.png", "min": float(np.nanmin(v)),
                                "max": float(np.nanmax(v)), "scale": scale.to_dict(), "group": group}
            np.save(out / "maps" / f"{f}.npy", e.map2d().float().cpu().numpy()[i])
            tgt = None if e.target is None else int(e.target[i])
            objects = e.extras.get("targets") if isinstance(e.extras, dict) else None
            tgt_name = result.class_name(tgt)
            if objects:  # target objects: what the row explains (a detection, a class region, a similarity)
                tgt = objects[i]
                rows = (task or {}).get("rows", [])
                tgt_name = rows[i]["caption"] if i < len(rows) else tgt.get("kind")
            main_pic, signed_pic = pics[""], pics.get("_signed")
            item = {
                "overlay": main_pic["path"], "map": f"maps/{f}.npy",
                "signed": None if signed_pic is None else signed_pic["path"],
                "view": ("abs_grayscale p99 (signed: diverging p99)" if pixel else
                         "overlay (diverging)" if main_pic["scale"]["view"] == "diverging" else "overlay"),
                "min": main_pic["min"], "max": main_pic["max"], "scale": main_pic["scale"],
                "signed_min": None if signed_pic is None else signed_pic["min"],
                "signed_max": None if signed_pic is None else signed_pic["max"],
                "signed_scale": None if signed_pic is None else signed_pic["scale"],
                "options": mr.options, "target": tgt, "target_name": tgt_name,
                "class_agnostic": spec.class_agnostic, "kind": spec.kind, "layer": e.layer,
                "seconds": mr.seconds / n}
            if r == 1:
                results["images"][i]["methods"][m] = item
            else:
                results["images"][i]["ranks"].setdefault(str(r), {})[m] = item
    if getattr(result, "settings", None):
        results["settings"] = result.settings  # the CPU / paper settings the CLI chose (issue 32)
    if getattr(result, "sanity", None):
        results["sanity"] = result.sanity
    if result.evaluation is not None:
        results["evaluation"] = result.evaluation
        results["evaluation_seconds"] = result.evaluation_seconds
        results["evaluation_protocol"] = getattr(result, "evaluation_protocol", None)
        comparisons = result.comparisons() if hasattr(result, "comparisons") else None
        if comparisons:
            results["comparisons"] = comparisons
        from interpretorch.report.evaluation import curve_figures

        results["evaluation_curves"] = curve_figures(result.evaluation, out / "images")
    results["flags"] = run_flags(result, results)
    results["headline"] = run_headline(results)
    return results


def run_flags(result: Any, results: dict[str, Any]) -> list[dict[str, Any]]:
    """The red flags of an explain / evaluate run: low-confidence predictions, identical and constant maps,
    ROAD orders no better than their reverse, metric values undefined for some images."""
    names = [img["name"] for img in results["images"]]
    out: list[dict[str, Any] | None] = []
    tops = [img["predictions"][0] if img["predictions"] else None for img in results["images"]]
    if names and all(t is not None for t in tops):
        out.append(red.low_confidence(names, [t["prob"] for t in tops], [short_class_name(t["name"]) for t in tops]))
    maps = {m: mr.explanation.map2d().detach().float().cpu().numpy() for m, mr in result.methods.items()}
    out += red.identical_maps(maps)
    out += red.constant_maps(maps, names)
    agnostic = set(results.get("class_agnostic", []))
    for r, methods in sorted((getattr(result, "ranks", {}) or {}).items()):
        for m, mr in methods.items():
            if m in maps and m not in agnostic:  # a class-agnostic method says so on the page already
                out.append(red.same_across_classes(m, maps[m], mr.explanation.map2d().detach().float().cpu()
                                                   .numpy(), r))
    for m, e in (result.evaluation or {}).items():
        morf, lerf = e.get("road_morf"), e.get("road_lerf")
        if isinstance(morf, dict) and isinstance(lerf, dict):
            out.append(red.road_order(m, morf.get("value"), lerf.get("value")))
        for k, v in e.items():
            n_k = v.get("n") if isinstance(v, dict) else None
            if isinstance(n_k, int) and n_k < len(names):
                out.append(red.flag("undefined_values", f"Undefined values: {k} of {m} is defined on {n_k} of "
                                                        f"{len(names)} image(s); its mean rests on those.",
                                    method=m, metric=k, n=n_k, of=len(names)))
    return [f for f in out if f]


def run_headline(results: dict[str, Any]) -> str:
    """One or two sentences answering the page's question: what the model predicts (and how sure it is), and
    for an evaluation which method the corrected tests support."""
    imgs = results["images"]
    preds = [(img["name"], img["predictions"][0]) for img in imgs if img["predictions"]]
    if results.get("task"):
        return task_headline(results)
    if not preds:
        text = f"{results['model']}: {len(imgs)} image(s) explained"
    elif len(preds) <= 4:
        text = f"{results['model']} predicts " + "; ".join(
            f"{n} \u2192 {short_class_name(p['name'])} (p = {p['prob']:.2f})" for n, p in preds)
    else:
        sure = sum(p["prob"] >= red.LOW_CONFIDENCE for _, p in preds)
        text = (f"{results['model']} on {len(preds)} images: {sure} predicted with top-1 probability "
                f"\u2265 {red.LOW_CONFIDENCE:g}, {len(preds) - sure} below")
    text += f"; {len(results['method_names'])} method(s) explain it." if preds and len(preds) == 1 else (
        f"; {len(results['method_names'])} method(s) explain each." if results["method_names"] else ".")
    comp = results.get("comparisons")
    if comp and comp.get("headline"):
        text += " " + comp["headline"]
    return text


def task_headline(results: dict[str, Any]) -> str:
    """The answer of a detection / segmentation / similarity page: how many rows (detections, class regions,
    images) from how many images, and what was left out, each with its count."""
    t = results["task"]
    rows, n_img, methods = t.get("rows", []), t.get("images", 0), len(results["method_names"])
    n_rows = len(rows)
    if t.get("task") == "detection":
        left = len(t.get("images_without_detection", []))
        text = (f"{results['model']} finds {n_rows} detection(s) with score ≥ {t.get('score_threshold', 0):g} "
                f"in {n_img - left} of {n_img} image(s); each row explains one detection (its box drawn) with "
                f"{methods} method(s).")
    elif t.get("task") == "segmentation":
        absent = len(t.get("classes_not_predicted", []))
        text = (f"{results['model']}: {n_rows} predicted class region(s) in {n_img} image(s), one row each "
                f"(the region outlined), explained by {methods} method(s)"
                + (f"; {absent} asked (image, class) pair(s) have no predicted pixel and are not explained."
                   if absent else "."))
    else:
        sims = [r["similarity"] for r in rows if "similarity" in r]
        text = (f"{results['model']}: cosine similarity to the reference of {len(sims)} image(s)"
                + (f" ranges {min(sims):.2f} to {max(sims):.2f}" if sims else "")
                + f"; {methods} method(s) explain what makes each image similar.")
    comp = results.get("comparisons")
    if comp and comp.get("headline"):  # the paired tests count the rows explained (detections, regions)
        text += " " + comp["headline"].replace(" image(s)", " row(s)" if t.get("task") != "similarity"
                                               else " image(s)", 1)
    return text


def _tile(m: str, e: dict[str, Any], signed: bool, r: dict[str, Any], rank: int) -> dict[str, Any]:
    """What the template needs for one picture: image, caption lines, tooltip and colour bar."""
    scale = e["signed_scale"] if signed else e["scale"]
    lo, hi = (e["signed_min"], e["signed_max"]) if signed else (e["min"], e["max"])
    pixel = e["signed"] is not None
    if pixel:
        what = "signed sum over channels" if signed else "|attribution| summed over channels"
    else:
        what = "signed map" if scale["view"] == "diverging" else "map"
    if e["class_agnostic"]:
        for_text, for_title = "class-agnostic", "class-agnostic: the same map for every class (the target is ignored)"
    elif isinstance(e["target"], dict):
        for_text, for_title = e["target_name"], f"explains {e['target_name']} ({e['target'].get('kind')} target)"
    elif e["target_name"] is not None:
        for_text = short_class_name(e["target_name"])
        for_title = f"explains class {e['target']}: {e['target_name']}"
    elif e["target"] is not None:
        for_text, for_title = f"class {e['target']}", f"explains class {e['target']}"
    else:
        for_text, for_title = "the given target", "explains the given target"
    sc = _scale_view(Scale(scale["view"], scale["lo"], scale["hi"], scale["shared"]))
    sanity = None
    if not signed and r.get("sanity") and r["sanity"].get(m):
        sanity = r["sanity"][m]
    return {"method": m, "src": e["signed"] if signed else e["overlay"], "what": what, "for_text": for_text,
            "for_title": for_title, "range": f"min {fmt_value(lo)} · max {fmt_value(hi)}",
            "title": f"{m} ({what}), {for_title}; raw min {lo!r}, max {hi!r}; colour scale {scale['describe']}, "
                     f"{sc['lo_text']} to {sc['hi_text']}" + (f", layer {e['layer']}" if e["layer"] else ""),
            "scale": sc, "signed": signed, "sanity": sanity, "rank": rank, "placeholder": None}


def _image_rows(img: dict[str, Any], r: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of tiles per method (and per view): one cell per explained class rank."""
    k = r.get("top_classes", 1)
    rows = []
    for m, e in img["methods"].items():
        for signed in ([False, True] if e["signed"] else [False]):
            cells = [_tile(m, e, signed, r, 1)]
            for rank in range(2, k + 1):
                other = img["ranks"].get(str(rank), {}).get(m)
                if other is None:
                    cells.append({"placeholder": "class-agnostic: same map as rank 1" if e["class_agnostic"]
                                  else "not explained", "method": m, "rank": rank})
                else:
                    cells.append(_tile(m, other, signed, r, rank))
            rows.append({"method": m, "signed": signed, "cells": cells})
    return rows


def _page(results: dict[str, Any]) -> dict[str, Any]:
    """Template data derived from ``results.json``: tiles, class columns, timing totals, label summary."""
    images = []
    for img in results["images"]:
        k = results.get("top_classes", 1)
        preds = img.get("predictions", [])
        columns = [{"rank": p["rank"], "name": p["name"], "index": p["index"], "prob": p["prob"],
                    "is_label": img.get("label") == p["index"]} for p in preds[:k]]
        images.append({**img, "rows": _image_rows(img, results) if img.get("methods") else [], "columns": columns})
    steps = results.get("steps", [])
    total = sum(s["seconds"] for s in steps) + sum(results.get("rank_seconds", {}).values())
    labelled = [i for i in results["images"] if i.get("correct") is not None]
    return {"images": images, "total_seconds": total, "n_labelled": len(labelled),
            "n_correct": sum(bool(i["correct"]) for i in labelled),
            "index_label": "ImageNet index" if results.get("imagenet") else "class index"}


def render_html(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` from a ``results.json`` structure; returns its path."""
    out = Path(out_dir) / "index.html"
    ev = evaluation_section(results) if results.get("evaluation") else None
    answer = answer_html(results.get("headline"), results.get("flags", []))
    html = _env().get_template("index.html").render(r=results, page=_page(results), ev=ev, answer=answer,
                                                    settings=settings_html(results.get("settings")),
                                                    answer_css=ANSWER_CSS)
    out.write_text(html, encoding="utf-8")
    return out


def write_report(result: Any, out_dir: str | Path, *, shared_scale: bool = False) -> Path:
    """Write the whole report of a run (pictures, maps, ``results.json``, ``index.html``); returns the page."""
    results = results_dict(result, out_dir, shared_scale=shared_scale)
    (Path(out_dir) / "results.json").write_text(json.dumps(results, indent=2))
    return render_html(results, out_dir)
