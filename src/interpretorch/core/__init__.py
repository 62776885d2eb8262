"""The ground floor: what every family (attribution, metrics, concepts, dissection, GANs, sanity checks,
transformers, datasets) shares, importing nothing of interpretorch above it.

- :mod:`~interpretorch.core.device`: the device a model lives on;
- :mod:`~interpretorch.core.inputs`: a checked (B, C, H, W) batch on that device;
- :mod:`~interpretorch.core.targets`: what is explained (top1, a class, one class per image, a callable, target
  objects) and the scores of output rows; :mod:`~interpretorch.core.target_objects`: the target objects
  (class, detection, segmentation, similarity, regression, function) and their routing to rows;
- :mod:`~interpretorch.core.batching`: the one batching rule (rows per model call) and its chunks;
- :mod:`~interpretorch.core.progress`: rows done out of rows needed, advanced by those chunks;
- :mod:`~interpretorch.core.seeding`: seeds per sub-stream, whatever the chunking;
- :mod:`~interpretorch.core.distributed`: the torch.distributed world (rank, size);
- :mod:`~interpretorch.core.fingerprint`: SHA-256 of a model's weights (what caches and checkpoints compare).
- :mod:`~interpretorch.core.plugins`: the families and report floor, imported on first need (entry points).
- :mod:`~interpretorch.core.stats`: the one statistics layer (intervals, paired tests, effect sizes,
  multiple-comparison correction, direction-aware verdicts).
"""
from interpretorch.core.batching import ACCELERATOR_ROWS, CPU_ROWS, check_batch_size, chunks, rows_per_pass
from interpretorch.core.device import model_device
from interpretorch.core.distributed import world
from interpretorch.core.fingerprint import model_fingerprint
from interpretorch.core.inputs import check_inputs
from interpretorch.core.progress import Progress, track
from interpretorch.core.seeding import seed_for
from interpretorch.core.targets import SCORES, Target, check_target, target_indices, target_scores
from interpretorch.core.target_objects import (ClassTarget, DetectionTarget, FunctionTarget, RegressionTarget,
                                               SegmentationTarget, SimilarityTarget, TargetObject)

__all__ = ["ACCELERATOR_ROWS", "CPU_ROWS", "check_batch_size", "chunks", "rows_per_pass", "model_device", "world", "model_fingerprint",
           "check_inputs", "Progress", "track", "seed_for", "SCORES", "Target", "check_target", "target_indices", "target_scores",
           "TargetObject", "ClassTarget", "DetectionTarget", "SegmentationTarget", "SimilarityTarget",
           "RegressionTarget", "FunctionTarget"]
