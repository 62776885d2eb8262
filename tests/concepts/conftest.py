"""Fixtures for the concept tests: the shipped ground-truth CNN and its concept sets (``concept_sets(seed)``)."""
from __future__ import annotations

import pytest
import torch

from interpretorch.concepts.toy import PREPROCESS, backgrounds, concept_examples, load_concept_cnn, make_concept_images


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many small ops; on the shared 2-core machine one thread is 10-30x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy():
    """The shipped ConceptCNN trained on stripes (class 0) versus dots (class 1), with its validation accuracy."""
    model, meta = load_concept_cnn()
    return model, meta["val_accuracy"]


def concept_sets(seed: int = 0) -> dict:
    """Class images, concept sets (stripes, dots, solid, checker patches on backgrounds) and random sets; every
    set's data seed is shifted by 1000 * ``seed`` (seed 0: the sets the tests use; 1-4: the margin measurements of
    ``measure_margins.py``)."""
    n, off = PREPROCESS.normalize, 1000 * seed
    test = make_concept_images(240, seed=5 + off)
    return {
        "test": test,
        "class0": n(test.images[test.labels == 0][:50]),
        "class1": n(test.images[test.labels == 1][:50]),
        "concepts": {c: n(concept_examples(c, 50, seed=100 + i + off))
                     for i, c in enumerate(["stripes", "dots", "solid", "checker"])},
        "random_concepts": {f"rnd{k}": n(backgrounds(50, seed=999 + k + off)) for k in range(4)},
        "randoms": [n(backgrounds(50, seed=200 + r + off)) for r in range(10)],
    }


@pytest.fixture(scope="session")
def toy_sets():
    """The concept sets of seed 0."""
    return concept_sets(0)
