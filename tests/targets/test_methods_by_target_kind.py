"""Every registered method against every target kind on tiny models: it gives finite maps of the right shape, or,
where its description says it does not explain that kind, a clear error naming the method and the kind."""
from __future__ import annotations

import inspect

import pytest
import torch

import interpretorch
from interpretorch.attribution import get_method, method_specs
from interpretorch.core.targets import (TARGET_KINDS, DetectionTarget, FunctionTarget, RegressionTarget,
                                        SegmentationTarget, SimilarityTarget)
from target_models import TinyDetector, TinyEmbedder, TinyRegressor, TinySegmenter

# the fewest rows each costly method accepts, so that the whole table stays fast
FAST = {"integrated_gradients": {"steps": 2}, "smoothgrad": {"n_samples": 2}, "vargrad": {"n_samples": 2},
        "rise": {"n_masks": 4}, "extremal_perturbation": {"iterations": 1}, "meaningful_perturbation": {"iterations": 1},
        "shapley_sampling": {"n_samples": 1}, "lime": {"n_samples": 4}, "kernel_shap": {"n_samples": 4},
        "gradient_shap": {"n_samples": 2}, "occlusion": {"window": 8}, "layer_conductance": {"steps": 2},
        "neuron_integrated_gradients": {"steps": 2}, "neuron_conductance": {"steps": 2}, "sess": {"window": 12},
        "groupcam": {"groups": 2}, "sscam": {"n_samples": 1}, "smoothgradcampp": {"n_samples": 2}}


def _cases():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    emb = TinyEmbedder().eval()
    reg = TinyRegressor().eval()
    return x, {"detection": (TinyDetector().eval(), [DetectionTarget(index=0), DetectionTarget(index=1)]),
               "segmentation": (TinySegmenter(out="hf").eval(), SegmentationTarget(1)),
               "similarity": (emb, SimilarityTarget.from_image(emb, x[0])),
               "regression": (reg, RegressionTarget(1)),
               "function": (reg, FunctionTarget(lambda o, r: o[r].sum()))}


X, CASES = _cases()
IMAGE_METHODS = [s.name for s in method_specs() if s.kind != "token"]


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("method", IMAGE_METHODS)
def test_method_explains_target_kind_or_says_it_cannot(method, kind):
    spec = get_method(method)
    model, target = CASES[kind]
    opts = {k: v for k, v in FAST.get(method, {}).items() if spec.accepts(k)}
    missing = [k for k, v in spec.options.items() if v is inspect.Parameter.empty]
    assert not missing, f"{method} needs options {missing} the table does not give"
    if kind not in spec.targets:
        with pytest.raises(ValueError, match=f"{spec.name} cannot explain a {kind} target"):
            interpretorch.explain(model, X, method, target=target, options={method: opts} if opts else None)
        return
    if not spec.applies_to(model):  # the attention methods on a CNN: works, or an error naming what it lacks
        try:
            e = interpretorch.explain(model, X, method, target=target, options={method: opts} if opts else None)
        except ValueError as err:
            assert "attention" in str(err) or "transformer" in str(err), str(err)
            return
    else:
        e = interpretorch.explain(model, X, method, target=target, options={method: opts} if opts else None)
    assert e.maps.shape[0] == 2 and e.maps.shape[-2:] == (16, 16)
    assert torch.isfinite(e.maps).all()
    assert e.target is None and e.extras["target_kind"] == kind


@pytest.mark.parametrize("kind", ["similarity", "regression", "function"])
def test_transformer_methods_explain_target_objects(kind):
    """The attention methods on a tiny random ViT whose (B, K) output is read as a regression head, an embedding or
    through a function."""
    from interpretorch.models.vit import TinyViT

    torch.manual_seed(0)
    vit = TinyViT(image_size=16, patch=8, dim=16).eval()
    x = torch.randn(2, 3, 16, 16)
    target = {"similarity": SimilarityTarget.from_image(vit, x[0]), "regression": RegressionTarget(1),
              "function": FunctionTarget(lambda o, r: o[r].sum())}[kind]
    names = [s.name for s in method_specs() if s.kind != "token" and s.applies is not None and s.applies_to(vit)]
    assert names, "no attention method applies to the tiny ViT"
    for name in names:
        e = interpretorch.explain(vit, x, name, target=target)
        assert e.maps.shape[0] == 2 and torch.isfinite(e.maps).all(), name


def test_every_method_declares_known_kinds():
    for spec in method_specs():
        assert spec.targets and set(spec.targets) <= set(TARGET_KINDS), spec.name
    assert get_method("cam").targets == ("class",)
    assert "detection" not in get_method("lrp").targets


def test_unsupported_kind_errors_in_a_shared_pass_too():
    model, target = CASES["segmentation"]
    with pytest.raises(ValueError, match="cam cannot explain a segmentation target"):
        interpretorch.explain(model, X, ["gradcam", "cam"], target=target)
