"""Fixtures for the concept tests: the ground-truth CNN (trained once per session) and its concept sets."""
from __future__ import annotations

import pytest
import torch

from interpretorch.concepts.toy import PREPROCESS, backgrounds, concept_examples, make_concept_images, train_concept_cnn


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many small ops; on the shared 2-core machine one thread is 10-30x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy():
    """The ConceptCNN trained on stripes (class 0) versus dots (class 1), with its validation accuracy."""
    model, acc, seconds = train_concept_cnn()
    return model, acc


@pytest.fixture(scope="session")
def toy_sets():
    """Class images, concept sets (stripes, dots, solid, checker patches on backgrounds) and random sets."""
    n = PREPROCESS.normalize
    test = make_concept_images(240, seed=5)
    return {
        "test": test,
        "class0": n(test.images[test.labels == 0][:50]),
        "class1": n(test.images[test.labels == 1][:50]),
        "concepts": {c: n(concept_examples(c, 50, seed=100 + i))
                     for i, c in enumerate(["stripes", "dots", "solid", "checker"])},
        "random_concepts": {f"rnd{k}": n(backgrounds(50, seed=999 + k)) for k in range(4)},
        "randoms": [n(backgrounds(50, seed=200 + r)) for r in range(10)],
    }
