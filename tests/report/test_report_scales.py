"""Caption and colour-scale rules of the report: class-agnostic captions, diverging scales for signed maps,
shared scales, one timing row per shared pass, sane file names."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

import interpretorch as it
from interpretorch.attribution.registry import get_method, method_specs
from interpretorch.explanation import Explanation
from interpretorch.models import TinyCNN
from interpretorch.report import write_report
from interpretorch.report.scales import fit_scale, is_signed
from interpretorch.run import MethodRun, RunResult


def _figures(html: str) -> dict[tuple[str, str], str]:
    """{(method, view): figure html} of the maps of the first image."""
    out = {}
    for fig in re.findall(r'<figure class="tile".*?</figure>', html, flags=re.S):
        method = re.search(r'data-method="([^"]+)"', fig).group(1)
        view = re.search(r'data-view="([^"]+)"', fig).group(1)
        out.setdefault((method, view), fig)
    return out


@pytest.fixture(scope="module")
def tiny_run():
    model, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return it.run(model, x, ["gradcam", "gradcam++", "eigencam", "gradient"], names=["a", "b"],
                  class_names=["cat, tabby", "dog", "loudspeaker, speaker, speaker unit, loudspeaker system", "d",
                               "e"], display=torch.rand(2, 3, 32, 32))


def test_class_agnostic_methods_are_captioned_as_such(tiny_run, tmp_path):
    page = write_report(tiny_run, tmp_path)
    figs = _figures(page.read_text())
    eigen = next(f for (m, _), f in figs.items() if m == "eigencam")
    grad = next(f for (m, _), f in figs.items() if m == "gradcam")
    assert "class-agnostic" in eigen and "class-agnostic" not in grad
    cls = int(tiny_run.methods["gradcam"].explanation.target[0])
    name = tiny_run.class_names[cls]
    assert f'title="explains class {cls}: {name}"' in grad  # the full name on hover ...
    assert f'>{name.split(",")[0]}</span>' in grad  # ... the short one shown
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["class_agnostic"] == ["eigencam"]


def test_flagged_methods_really_ignore_the_target(tiny_run):
    # The flag is a claim about the method: the map is the same whatever class is asked for.
    from interpretorch.models import load_model

    flagged = [s.name for s in method_specs() if s.class_agnostic]
    assert {"eigencam", "attention", "rollout"} <= set(flagged)
    assert not get_method("gradcam").class_agnostic and not get_method("gradient_rollout").class_agnostic
    tiny, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    vit = load_model("tiny_vit")
    xv = torch.rand(2, 3, 64, 64)
    for name in flagged:
        model, inputs = (vit.model, xv) if get_method(name).applies is not None else (tiny, x)
        a = it.explain(model, inputs, name, target=[0, 0]).maps
        b = it.explain(model, inputs, name, target=[1, 2]).maps
        assert torch.allclose(a, b), name


def _result(maps: dict[str, torch.Tensor], display: torch.Tensor) -> RunResult:
    methods = {m: MethodRun(m, Explanation(v, m, target=torch.tensor([0] * v.shape[0])), {}, 0.1)
               for m, v in maps.items()}
    b = display.shape[0]
    return RunResult(inputs=display, names=[f"img{i}" for i in range(b)],
                     predictions=[[{"index": 0, "name": "zero", "prob": 0.5}]] * b, methods=methods, target="top1",
                     layer=None, class_names=["zero", "one"], display=display)


def test_signed_maps_get_a_diverging_scale_centred_on_zero(tmp_path):
    h = w = 16
    ramp = torch.linspace(-1, 2, w).expand(h, w)[None]  # signed: -1 .. 2
    positive = torch.linspace(1, 3, w).expand(h, w)[None]  # unsigned: 1 .. 3
    photo = torch.full((1, 3, h, w), 0.5)
    r = _result({"occlusion": ramp.clone(), "rise": positive.clone(),
                 "gradient": torch.stack([ramp[0], -2 * ramp[0], ramp[0]])[None]}, photo)
    write_report(r, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())["images"][0]["methods"]
    occ, rise, grad = res["occlusion"], res["rise"], res["gradient"]
    # signed: symmetric at the 99th percentile of |value|
    s99 = float(np.percentile(np.abs(ramp.numpy()), 99))
    assert occ["scale"]["view"] == "diverging" and occ["scale"]["lo"] == pytest.approx(-s99)
    assert occ["scale"]["hi"] == pytest.approx(s99)
    spike = torch.zeros(1, h, w)
    spike[0, 0, 0], spike[0, 1:, :] = 100.0, -1.0  # one extreme pixel does not wash out the rest
    assert fit_scale("diverging", [spike[0].numpy()]).hi == pytest.approx(1.0)
    assert (occ["min"], occ["max"]) == pytest.approx((-1.0, 2.0))
    # unsigned: from 0 (not the minimum) to the maximum
    assert rise["scale"]["view"] == "sequential" and (rise["scale"]["lo"], rise["scale"]["hi"]) == (0.0, 3.0)
    # Pixel attributions: |attribution| in grayscale from 0, and the signed sum inline on a symmetric scale.
    assert grad["scale"]["view"] == "magnitude" and grad["scale"]["lo"] == 0.0
    assert grad["signed_scale"]["view"] == "diverging" and grad["signed_scale"]["lo"] == -grad["signed_scale"]["hi"]
    with Image.open(tmp_path / occ["overlay"]) as im:
        px = np.asarray(im.convert("RGB")).astype(int)
    zero_col = int(round((0 - -1) / 3 * (w - 1)))  # where the ramp crosses zero: the photo shows unchanged
    assert np.abs(px[:, zero_col] - 128).max() <= 12
    assert px[0, -1, 0] > px[0, -1, 2] + 100  # +2: red
    assert px[0, 0, 2] > px[0, 0, 0] + 40  # -1: blue, weaker than +2 (centred on zero, not stretched)
    html = (tmp_path / "index.html").read_text()
    figs = _figures(html)
    assert ("occlusion", "diverging") in figs and ("rise", "sequential") in figs and ("gradient", "diverging") in figs
    bar = figs[("occlusion", "diverging")]
    assert "linear-gradient" in bar and re.search(r"<span>-2</span><span>0</span><span>2</span>", bar)
    assert "min -1 · max 2" in bar


def test_shared_scale_is_one_range_across_methods_and_images(tmp_path):
    h = w = 8
    photo = torch.full((2, 3, h, w), 0.5)
    a = torch.stack([torch.full((h, w), 1.0), torch.full((h, w), 4.0)])
    a[:, 0, 0] = 0.5
    b = torch.stack([torch.full((h, w), 2.0), torch.full((h, w), 3.0)])
    r = _result({"gradcam": a, "rise": b}, photo)
    write_report(r, tmp_path / "per", shared_scale=False)
    write_report(r, tmp_path / "shared", shared_scale=True)
    per = json.loads((tmp_path / "per" / "results.json").read_text())
    shared = json.loads((tmp_path / "shared" / "results.json").read_text())
    assert per["scale"] == "per-image" and shared["scale"] == "shared"
    assert per["images"][1]["methods"]["rise"]["scale"]["hi"] == 3.0  # each map its own range, from 0
    assert per["images"][1]["methods"]["rise"]["scale"]["lo"] == 0.0
    for img in shared["images"]:
        for m in ("gradcam", "rise"):
            s = img["methods"][m]["scale"]
            assert (s["lo"], s["hi"], s["shared"]) == (0.0, 4.0, True)
    assert "shared</b> across methods and images" in (tmp_path / "shared" / "index.html").read_text()
    assert fit_scale("diverging", [np.array([-3.0, 1.0])]).hi == pytest.approx(2.98) and is_signed(np.array([-1e-9, 1.0])) is False


def test_a_shared_pass_is_one_timing_row_and_file_names_are_sane(tiny_run, tmp_path):
    write_report(tiny_run, tmp_path)
    res = json.loads((tmp_path / "results.json").read_text())
    steps = res["steps"]
    assert [s["methods"] for s in steps] == [["gradcam", "gradcam++", "eigencam"], ["gradient"]]
    assert steps[0]["shared"] and not steps[1]["shared"]
    html = (tmp_path / "index.html").read_text()
    time_table = html.split("<h2>Time</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr><td class=\"l\">(.*?)</td><td>([0-9.]+)</td>", time_table)
    assert len(rows) == 2 and rows[0][0].startswith("gradcam, gradcam++, eigencam")
    total = float(re.search(r"total explaining</th><th>([0-9.]+)", time_table).group(1))
    assert total == pytest.approx(sum(s["seconds"] for s in steps), abs=2e-3)  # the shared pass counted once
    assert (tmp_path / "images" / "000_a_gradcampp.png").exists()
    assert not list((tmp_path / "images").glob("*pppp*"))


def test_topk_explains_the_k_best_classes_side_by_side(tmp_path):
    model, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    r = it.run(model, x, ["gradcam", "eigencam", "gradient"], top_classes=3, display=torch.rand(2, 3, 32, 32))
    assert set(r.ranks) == {2, 3}
    with torch.no_grad():
        order = model(x).topk(3, dim=1).indices
    for rank in (2, 3):
        assert set(r.ranks[rank]) == {"gradcam", "gradient"}  # class-agnostic methods only once
        assert r.ranks[rank]["gradcam"].explanation.target.tolist() == order[:, rank - 1].tolist()
    page = write_report(r, tmp_path).read_text()
    assert page.count("rank 3:") == 2 and "eigencam: class-agnostic: same map as rank 1" in page
    assert (tmp_path / "images" / "001_image_1_gradcam_rank3.png").exists()
    with pytest.raises(ValueError, match="target='top1'"):
        it.run(model, x, ["gradcam"], target=1, top_classes=2)


def test_explanations_render_inline_in_jupyter():
    from interpretorch.report.notebook import grid

    model, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    got = it.explain(model, x, ["gradcam", "eigencam", "gradient"])
    one = got["gradcam"]._repr_html_()
    assert one.count("<img") == 2 and one.count("linear-gradient") == 2 and "min " in one
    g = grid(got, images=torch.rand(2, 3, 32, 32))._repr_html_()
    assert g.count("<img") == 2 * 4  # per image: gradcam, eigencam, gradient |attr.| and signed
    assert "gradient signed" in g and "data:image/png;base64," in g
    shared = grid(got, shared_scale=True)._repr_html_()
    assert "shared by every map" in shared
    with pytest.raises(TypeError):
        grid({"a": 1})


def test_both_overlays_blend_through_one_renderer(tiny, images):
    import matplotlib

    from interpretorch import explain
    from interpretorch.report.drawing import overlay as explanation_overlay
    from interpretorch.report.drawing import to_uint8_images
    from interpretorch.report.scales import blend

    exp = explain(tiny, images, "gradcam", layer="features")
    photos = to_uint8_images(images)
    colors = matplotlib.colormaps["viridis"](exp.normalized().cpu().numpy())[..., :3]
    assert np.array_equal(explanation_overlay(exp, images, cmap="viridis", alpha=0.3), blend(photos, colors, 0.3))
    assert np.array_equal(blend(photos, colors, 0.0), photos)
    assert np.array_equal(blend(photos, colors, 1.0), (colors * 255).round().astype(np.uint8))
