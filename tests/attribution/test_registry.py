"""The method registry: one description per method, register() from outside the package, bind(), and the one
batching rule every method keeps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import interpretorch as it
from interpretorch.attribution import registry
from interpretorch.cli import main
from interpretorch.explanation import Explanation
from interpretorch.metrics import evaluate
from interpretorch.models import TinyCNN


def input_times_two(model, inputs, target="top1", *, batch_size=None, scale: float = 2.0) -> Explanation:
    """A method defined outside the package: scale x the inputs (its numbers are known exactly)."""
    with torch.no_grad():
        out = model(inputs)
    idx = out.argmax(1) if target == "top1" else torch.as_tensor(target).expand(len(inputs))
    return Explanation(maps=scale * inputs, method="input_times_two", target=idx, outputs=out)


@pytest.fixture
def external_method():
    spec = it.register("input_times_two", input_times_two, kind="pixel", aliases=("x2",))
    yield spec
    registry._METHODS.pop("input_times_two")
    registry._ALIASES.pop("x2")


def test_every_method_is_described_once():
    specs = it.method_specs()
    assert [s.name for s in specs] == it.available_methods()
    assert len({s.name for s in specs}) == len(specs) >= 19
    by = {s.name: s for s in specs}
    assert by["gradcam"].group == "cam" and by["gradcam"].kind == "region" and by["gradcam"].needs_layer
    assert by["integrated_gradients"].kind == "pixel" and not by["integrated_gradients"].needs_layer
    assert by["integrated_gradients"].options["steps"] == 32
    assert by["occlusion"].kind == "region" and "window" in by["occlusion"].options
    assert it.get_method("IG").name == "integrated_gradients" and it.get_method("Grad-CAM++").name == "gradcam++"
    assert set(it.default_methods()) == {"gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam",
                                         "ablationcam"}
    assert all(s.doc for s in specs)


def test_register_from_outside_runs_through_explain_evaluate_and_cli(external_method, tmp_path, capsys):
    model, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    e = it.explain(model, x, "x2")
    torch.testing.assert_close(e.maps, 2 * x)
    both = it.explain(model, x, ["input_times_two", "gradcam"], options={"x2": {"scale": 3.0}})
    torch.testing.assert_close(both["input_times_two"].maps, 3 * x)
    ev = evaluate(model, x, {"input_times_two": e}, metrics=["deletion"])
    assert ev["input_times_two"]["deletion"]["value"] is not None
    with pytest.raises(ValueError, match="already registered"):
        it.register("input_times_two", input_times_two)
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    out = tmp_path / "rep"
    assert main(["explain", str(img), "--model", "tiny_cnn", "--size", "32", "--methods", "x2,gradcam",
                 "--option", "x2.scale=4.0", "--out", str(out)]) == 0
    assert main(["methods", "x2"]) == 0
    assert "input_times_two" in capsys.readouterr().out


def test_bind_fixes_options_and_checks_them_early(tiny, images):
    ig = it.bind("ig", steps=4, batch_size=3)
    e = ig(tiny, images, 2)
    ref = it.explain(tiny, images, "integrated_gradients", 2, options={"ig": {"steps": 4}})
    torch.testing.assert_close(e.maps, ref.maps)
    assert e.extras["steps"] == 4 and repr(ig) == "bind('integrated_gradients', steps=4)"
    cam = it.bind("gradcam", layer="features.8", relu=False)
    assert cam(tiny, images).layer == "features.8"
    with pytest.raises(TypeError, match="takes no option 'stepz'.*steps"):
        it.bind("integrated_gradients", stepz=4)
    with pytest.raises(ValueError, match="takes no layer"):
        it.bind("gradient", layer="features")
    with pytest.raises(ValueError, match="did you mean"):
        it.bind("gradcamm")


@pytest.mark.numerics
@pytest.mark.parametrize("method,options", [
    ("gradcam", {}), ("eigencam", {}), ("scorecam", {}), ("ablationcam", {}), ("gradient", {}),
    ("integrated_gradients", {"steps": 5}), ("smoothgrad", {"n_samples": 4}), ("guided_gradcam", {}),
    ("occlusion", {"window": 8, "stride": 8}), ("rise", {"n_masks": 10, "grid": 4})])
def test_maps_are_identical_for_every_batch_size(tiny, images, method, options):
    maps = [it.explain(tiny, images, method, [0, 3, 1, 4], batch_size=bs, options={method: options}).maps
            for bs in (1, 3, None)]
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "integrated_gradients", "occlusion", "rise", "vargrad"])
def test_a_target_list_of_the_wrong_length_is_refused_before_any_chunking(tiny, images, method):
    with pytest.raises(ValueError, match="2 targets for 4 images"):
        it.explain(tiny, images, method, target=[1, 2], batch_size=2)


def test_the_batching_rule_is_one_rule():
    from interpretorch.core.batching import rows_per_pass

    assert rows_per_pass(None, "cpu") == 8 and rows_per_pass(None, "cuda") == 64 and rows_per_pass(5, "cpu") == 5
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="rows per model call"):
            rows_per_pass(bad, "cpu")
    with pytest.raises(ValueError, match="rows per model call"):
        it.explain(TinyCNN().eval(), torch.rand(1, 3, 32, 32), "gradcam", batch_size=0)


def test_layer_for_pixel_methods_is_an_error_not_ignored(tiny, images):
    with pytest.raises(ValueError, match="layer= is for the layer methods"):
        it.explain(tiny, images, "gradient", layer="features")
