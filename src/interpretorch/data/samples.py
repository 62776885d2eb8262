"""The bundled sample photos (shipped by scikit-image) used when no images are given."""
from __future__ import annotations

import numpy as np

SAMPLE_NAMES = ("chelsea", "coffee", "astronaut", "rocket")


def sample_images() -> list[tuple[str, np.ndarray]]:
    """Return (name, RGB uint8 array) for scikit-image's chelsea, coffee, astronaut and rocket photos."""
    from skimage import data

    return [(name, getattr(data, name)()) for name in SAMPLE_NAMES]
