"""The capture contract: right activations and gradients, and the model left exactly as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from interpretorch.capture import capture


def test_activation_and_gradient_match_autograd(tiny, images, snapshot):
    snap = snapshot(tiny)
    # Reference: an explicit forward with the activation as a tensor requiring grad.
    feats = tiny.features[:5](images)
    ref_act = feats.detach().requires_grad_()
    out = tiny.features[5:](ref_act.clone())
    out = tiny.fc(tiny.pool(out).flatten(1))
    ref_grad, = torch.autograd.grad(out[:, 2].sum(), ref_act)
    tiny.zero_grad(set_to_none=True)
    with capture(tiny, "features.4") as rec:
        logits = tiny(images)
        g = rec.gradients(logits[:, 2])["features.4"]
        a = rec["features.4"]
    assert torch.allclose(a, ref_act, atol=1e-6)
    assert torch.allclose(g, ref_grad, atol=1e-6)
    snap.assert_unchanged()


def test_inplace_relu_after_layer_does_not_corrupt_activation(tiny, images):
    # features.3 (BatchNorm) is followed by ReLU(inplace=True): the recorded output must stay pre-ReLU.
    with capture(tiny, "features.1") as rec:
        tiny(images)
        a = rec["features.1"]
    with torch.no_grad():
        expected = tiny.features[1](tiny.features[0](images))
    assert (a < 0).any() and torch.allclose(a, expected, atol=1e-6)


def test_state_restored_also_when_body_raises(tiny, images, snapshot):
    tiny.train()
    tiny.fc.weight.requires_grad_(False)
    snap = snapshot(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(tiny, ["features.4", "features.8"]):
            tiny(images)
            raise RuntimeError("boom")
    snap.assert_unchanged()
    assert tiny.training and not tiny.fc.weight.requires_grad


def test_layer_run_twice_is_reported():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.conv(self.conv(x)).mean((2, 3))

    m = Twice()
    with capture(m, "conv") as rec:
        m(torch.randn(1, 3, 4, 4))
        with pytest.raises(RuntimeError, match="ran 2 times"):
            rec["conv"]


def test_multiple_layers_each_get_their_gradient(tiny, images):
    with capture(tiny, ["features.0", "features.8"]) as rec:
        out = tiny(images)
        grads = rec.gradients(out[:, 0])
    assert grads["features.0"].shape == (4, 8, 32, 32)
    assert grads["features.8"].shape == (4, 32, 8, 8)
    assert grads["features.0"].abs().sum() > 0 and grads["features.8"].abs().sum() > 0
