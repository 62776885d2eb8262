"""Readable reports: PNG overlays and an HTML page per run."""
from interpretorch.report.html import write_report

__all__ = ["write_report"]
