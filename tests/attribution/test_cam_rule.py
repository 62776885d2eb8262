"""``@cam_rule`` is ``register`` plus the rule the shared CAM pass applies (one way to add a method)."""
from __future__ import annotations

import pytest
import torch

from interpretorch import explain
from interpretorch.attribution import registry
from interpretorch.attribution.cam import CAM_RULES, cam_rule, gradcam_rule


def test_cam_rule_registers_through_register(tiny, images):
    try:
        @cam_rule("twice_gradcam")
        def twice(a, g, ctx=None):
            """Two times Grad-CAM."""
            return 2 * gradcam_rule(a, g)

        spec = registry.get_method("twice_gradcam")
        assert (spec.kind, spec.group, spec.needs_layer, spec.doc) == ("region", "cam", True, "Two times Grad-CAM.")
        res = explain(tiny, images, ["twice_gradcam", "gradcam"], layer="features")
        assert torch.allclose(res["twice_gradcam"].raw, 2 * res["gradcam"].raw, atol=1e-6)
    finally:
        CAM_RULES.pop("twice_gradcam", None)
        registry._METHODS.pop("twice_gradcam", None)


def test_a_taken_name_is_refused_and_leaves_no_rule():
    before = dict(CAM_RULES)
    with pytest.raises(ValueError, match="already registered"):
        @cam_rule("gradcam")
        def other(a, g, ctx=None):
            return a.sum(1)
    assert CAM_RULES == before
