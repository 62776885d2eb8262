"""Shared by the tests of the torchvision / timm / Hugging Face environment."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run each test on one thread (the CI machine has two cores; the models here are the large ones), then put the
    thread count back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
