"""Shared fixtures: small models, the pretrained model (loaded once), and the model-unchanged check."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

from interpretorch.models import TinyCNN, load_model


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The user's cache folder (``interpretorch methods`` keeps its listing there) is a temporary one."""
    os.environ["INTERPRETORCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("user-cache"))
    return os.environ["INTERPRETORCH_CACHE_DIR"]


@pytest.fixture(scope="session")
def pretrained():
    """The pretrained EfficientNet-Lite0 with its preprocessing (loaded once per session)."""
    return load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def sample_batch(pretrained):
    """chelsea, coffee, astronaut, rocket preprocessed for EfficientNet-Lite0."""
    from skimage import data

    return pretrained.preprocess([data.chelsea(), data.coffee(), data.astronaut(), data.rocket()])


@pytest.fixture
def tiny() -> nn.Module:
    """A small CNN with BatchNorm and in-place ReLU, in eval mode."""
    return TinyCNN(num_classes=5).eval()


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 32, 32, generator=g)


class ModelSnapshot:
    """Everything the model-unchanged contract promises, recorded before a call."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.state = copy.deepcopy(model.state_dict())
        self.training = {n: m.training for n, m in model.named_modules()}
        self.requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}

    def assert_unchanged(self) -> None:
        m = self.model
        for k, v in m.state_dict().items():
            assert torch.equal(v, self.state[k]), f"parameter/buffer {k} changed"
        assert {n: x.training for n, x in m.named_modules()} == self.training, "train/eval flags changed"
        assert {n: p.requires_grad for n, p in m.named_parameters()} == self.requires_grad, "requires_grad changed"
        for n, p in m.named_parameters():
            assert p.grad is None, f"{n}.grad was filled"
        for n, x in m.named_modules():
            assert not x._forward_hooks, f"forward hook left on {n!r}"
            assert not x._forward_pre_hooks, f"forward pre-hook left on {n!r}"
            assert not x._backward_hooks, f"backward hook left on {n!r}"
            assert not getattr(x, "_backward_pre_hooks", {}), f"backward pre-hook left on {n!r}"


@pytest.fixture
def snapshot():
    """Factory: ``snap = snapshot(model)`` ... ``snap.assert_unchanged()``."""
    return ModelSnapshot
