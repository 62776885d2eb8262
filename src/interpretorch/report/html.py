"""Render a :class:`~interpretorch.run.RunResult` as files: ``index.html``, ``results.json``, PNG pictures and
the raw maps (``.npy``)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from interpretorch.report.evaluation import curves_figure, evaluation_table


def _env() -> Environment:
    env = Environment(loader=PackageLoader("interpretorch.report", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v, digits=3: "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else v)
    return env


def _stem(i: int, name: str) -> str:
    return f"{i:03d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:60]


def _file_safe(method: str) -> str:
    return method.replace("+", "p")


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def results_dict(result: Any, out_dir: str | Path, *, write_files: bool = True) -> dict[str, Any]:
    """Write the run's pictures and maps under ``out_dir`` and return the ``results.json`` structure."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "maps").mkdir(parents=True, exist_ok=True)
    n = len(result.names)
    target = result.target
    results: dict[str, Any] = {
        "model": result.model_name, "device": result.device,
        "target": str(target.tolist() if hasattr(target, "tolist") else target),
        "method_names": list(result.methods), "images": [], "failed": list(result.failed), "timing": {}}
    if result.layer is not None:
        results["layer"] = result.layer
    stems = [_stem(i, name) for i, name in enumerate(result.names)]
    display = result.display
    for i, (name, stem) in enumerate(zip(result.names, stems)):
        entry = {"name": Path(name).name if "/" in name or "\\" in name else name, "file": name,
                 "image": None, "predictions": result.predictions[i], "methods": {}}
        if display is not None:
            entry["image"] = f"images/{stem}.png"
            _save_png((display[i].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8),
                      out / entry["image"])
        results["images"].append(entry)
    for m, mr in result.methods.items():
        e = mr.explanation
        results["timing"][m] = {"seconds": mr.seconds, "per_image": mr.seconds / n, "shared_with": mr.shared_with}
        # Pixel attributions (B, C, H, W) are shown as the sanity-check paper does: |map| summed over channels in
        # grayscale and the signed sum in a diverging colormap, both clipped at the 99th percentile. Heat maps
        # over the image suit the smooth region maps (CAMs, occlusion, RISE), not pixel-level gradients.
        pixel = e.maps.dim() == 4
        if pixel or display is None:
            pictures = e.visualize("abs_grayscale")
        else:
            pictures = e.overlay(display)
        signed = e.visualize("diverging") if pixel else None
        maps2d = e.map2d().float().cpu().numpy()
        for i, stem in enumerate(stems):
            f = f"{stem}_{_file_safe(m)}"
            _save_png(pictures[i], out / "images" / f"{f}.png")
            if signed is not None:
                _save_png(signed[i], out / "images" / f"{f}_signed.png")
            np.save(out / "maps" / f"{f}.npy", maps2d[i])
            tgt = None if e.target is None else int(e.target[i])
            results["images"][i]["methods"][m] = {
                "overlay": f"images/{f}.png", "map": f"maps/{f}.npy",
                "signed": None if signed is None else f"images/{f}_signed.png",
                "view": "abs_grayscale p99 (signed: diverging p99)" if pixel else "overlay",
                "options": mr.options, "target": tgt, "target_name": result.class_name(tgt),
                "layer": e.layer, "seconds": mr.seconds / n}
    if result.evaluation is not None:
        results["evaluation"] = result.evaluation
        results["evaluation_seconds"] = result.evaluation_seconds
        if curves_figure(result.evaluation, out / "images" / "curves.png") is not None:
            results["evaluation_curves"] = "images/curves.png"
    return results


def render_html(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` from a ``results.json`` structure; returns its path."""
    out = Path(out_dir) / "index.html"
    table = evaluation_table(results["evaluation"]) if results.get("evaluation") else None
    out.write_text(_env().get_template("index.html").render(r=results, ev=table), encoding="utf-8")
    return out


def write_report(result: Any, out_dir: str | Path) -> Path:
    """Write the whole report of a run (pictures, maps, ``results.json``, ``index.html``); returns the page."""
    results = results_dict(result, out_dir)
    (Path(out_dir) / "results.json").write_text(json.dumps(results, indent=2))
    return render_html(results, out_dir)
