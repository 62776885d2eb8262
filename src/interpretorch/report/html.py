"""Render a run's results (predictions, overlays, metrics) as a self-contained HTML page."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape


def _env() -> Environment:
    env = Environment(loader=PackageLoader("interpretorch.report", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v, digits=3: "-" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else v)
    return env


def write_report(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` from the ``results.json`` structure; returns its path."""
    out = Path(out_dir) / "index.html"
    html = _env().get_template("index.html").render(r=results)
    out.write_text(html, encoding="utf-8")
    return out
