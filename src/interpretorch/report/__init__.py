"""Readable reports: render result objects (never argparse) as HTML pages, JSON and pictures."""
from interpretorch.report.html import render_html, results_dict, write_report

__all__ = ["write_report", "results_dict", "render_html"]
