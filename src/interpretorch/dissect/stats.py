"""Network Dissection's streaming statistics, which live in :mod:`interpretorch.core.runningstats` (shared with
GAN Dissection); kept here so ``interpretorch.dissect.stats`` keeps working."""
from interpretorch.core.runningstats import MAX_EXACT_VALUES, IoUTally, TopImages, TopQuantile, label_masks

__all__ = ["MAX_EXACT_VALUES", "IoUTally", "TopImages", "TopQuantile", "label_masks"]
