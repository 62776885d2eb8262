"""Readable reports: render result objects (never argparse) as HTML pages, JSON and pictures.

Importing the package installs the drawing (:mod:`~interpretorch.report.drawing`) and the Jupyter display
(:mod:`~interpretorch.report.notebook`) of :class:`~interpretorch.explanation.Explanation`.
"""
from interpretorch.report import drawing, notebook  # noqa: F401 - installs Explanation's pictures and display
from interpretorch.report.html import render_html, results_dict, write_report
from interpretorch.report.notebook import grid

__all__ = ["write_report", "results_dict", "render_html", "grid"]
