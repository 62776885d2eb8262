"""Fixtures of the metric tests."""
from __future__ import annotations

import warnings

import pytest


@pytest.fixture
def quantus():
    """Quantus, with its parameterisation warnings silenced."""
    warnings.filterwarnings("ignore", module="quantus")
    import quantus as q

    return q
