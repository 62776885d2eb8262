"""Seeds that do not depend on chunking: one well-mixed seed per (seed, sub-stream)."""
from __future__ import annotations

import numpy as np

__all__ = ["seed_for"]


def seed_for(seed: int, *stream: int) -> int:
    """A well-mixed 63-bit seed for sub-stream ``stream`` of ``seed`` (so each sample draws the same noise
    whatever the chunking)."""
    return int(np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(1, np.uint64)[0] >> 1)
