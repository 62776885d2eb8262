"""Whole datasets: images streamed in batches, per-image results written to sharded files as they come,
resumable, the same under ``torchrun``; a paper-style summary and a paged report."""
from interpretorch.datasets.job import DatasetRun, explain_dataset
from interpretorch.datasets.streams import DatasetError, ImageSet, open_images
from interpretorch.datasets.summary import bootstrap_ci, paired_test, summarize
from interpretorch.datasets.writer import load_maps, read_rows

__all__ = ["DatasetRun", "explain_dataset", "DatasetError", "ImageSet", "open_images", "bootstrap_ci",
           "paired_test", "summarize", "load_maps", "read_rows"]
