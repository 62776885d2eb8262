"""Bad inputs and unusual models: every case a clear error or a correct answer, never a silent wrong one."""
from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import interpretorch as it
from interpretorch.cli import main
from interpretorch.models import TinyCNN, load_image


def test_wrong_length_target_in_the_cli_exits_2(tmp_path, capsys):
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    code = main(["explain", str(tmp_path), "--model", "tiny_cnn", "--target", "1,2", "--batch-size", "2",
                 "--methods", "gradcam", "--out", str(tmp_path / "rep")])
    assert code == 2 and "2 targets for 4 images" in capsys.readouterr().err


def test_torchscript_refuses_layer_methods_with_what_to_do_and_export_programs_work(tmp_path, capsys):
    model, x = TinyCNN(num_classes=5).eval(), torch.rand(3, 3, 32, 32)
    ts = torch.jit.trace(model, x)
    with pytest.raises(TypeError, match="TorchScript.*pixel method.*torch.export"):
        it.explain(ts, x, "gradcam")
    torch.testing.assert_close(it.explain(ts, x, "gradient", 1).maps, it.explain(model, x, "gradient", 1).maps)
    ts.save(str(tmp_path / "m.pt"))
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert main(["explain", str(img), "--model", str(tmp_path / "m.pt"), "--size", "32",
                 "--out", str(tmp_path / "r")]) == 2
    assert "torch.export" in capsys.readouterr().err
    assert main(["explain", str(img), "--model", str(tmp_path / "m.pt"), "--size", "32", "--methods", "gradient",
                 "--out", str(tmp_path / "r")]) == 0
    assert main(["layers", "--model", str(tmp_path / "m.pt")]) == 2
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    loaded = it.load_model(str(tmp_path / "m.pt2")).model
    got = it.explain(loaded, x, ["gradcam", "gradient"], layer="features")
    ref = it.explain(model, x, ["gradcam", "gradient"], layer="features")
    for m in ref:
        torch.testing.assert_close(got[m].maps, ref[m].maps)


def test_decompression_bomb_and_16_bit_png(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (14000, 14000)).save(bomb)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="refusing image"):
        load_image(bomb)
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    rgb = load_image(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (64, 64, 3)
    expect = np.round(ramp.astype(float) / 65535 * 255)
    assert np.abs(rgb[..., 0].astype(float) - expect).max() <= 1 and (rgb == 255).mean() < 0.01


class InPlaceFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.net = TinyCNN(num_classes=4)

    def forward(self, x):
        return self.net(self.relu(x))


@pytest.mark.parametrize("method", ["gradcam", "scorecam", "ablationcam", "gradient", "integrated_gradients",
                                    "smoothgrad", "guided_backprop", "occlusion", "rise"])
def test_a_model_whose_first_op_is_in_place_never_changes_the_callers_input(method):
    model, x = InPlaceFirst().eval(), torch.randn(2, 3, 32, 32)
    before = x.clone()
    opts = {"integrated_gradients": {"steps": 3}, "smoothgrad": {"n_samples": 2}, "rise": {"n_masks": 8},
            "occlusion": {"window": 16, "stride": 16}}.get(method, {})
    it.explain(model, x, method, options={method: opts} if opts else None)
    assert torch.equal(x, before)


def test_default_layer_follows_an_edited_model_and_a_1x1_layer_is_refused():
    model, x = TinyCNN(num_classes=3).eval(), torch.rand(1, 3, 32, 32)
    assert it.explain(model, x, "gradcam").layer == "features"
    model.features = nn.Sequential(*list(model.features)[:4])  # edited in place: fewer layers
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.fc = nn.Linear(model.features[0].out_channels, 3) if hasattr(model, "fc") else model.fc
    try:
        layer = it.explain(model, x, "gradcam").layer
    except RuntimeError:
        layer = None  # the edited TinyCNN may no longer run; what matters is that no stale name is served
    assert layer in (None, "features") or layer.startswith("features.")
    with pytest.raises(ValueError, match="1x1"):
        it.explain(TinyCNN(num_classes=3).eval(), torch.rand(1, 3, 8, 8), "gradcam", layer="pool")


class DictOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyCNN(num_classes=3)

    def forward(self, x):
        return {"logits": self.net(x)}


def test_dict_outputs_and_nan_outputs_get_clear_messages():
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TypeError, match="dict, not a .B, num_classes. tensor; pass a callable target"):
        it.explain(DictOut().eval(), x, "gradient")
    assert it.explain(DictOut().eval(), x, "gradient", target=lambda o: o["logits"][:, 0]).maps.shape == x.shape
    nan = nn.Sequential(TinyCNN(num_classes=3), nn.Hardtanh(float("nan"), float("nan"))).eval()
    with pytest.raises(FloatingPointError, match="NaN"):
        it.explain(nan, x, "gradient")


def test_a_users_factory_from_the_working_directory_and_one_that_raises(tmp_path, monkeypatch, capsys):
    (tmp_path / "mymodels.py").write_text(
        "from interpretorch.models import TinyCNN\n"
        "def good():\n    return TinyCNN(num_classes=3)\n"
        "def bad():\n    raise RuntimeError('no weights here')\n"
        "import torch\n"
        "def gray():\n    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", str(tmp_path))])
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    assert main(["explain", str(img), "--model", "mymodels:good", "--size", "32", "--methods", "gradcam"]) == 0
    assert main(["explain", str(img), "--model", "mymodels:bad", "--size", "32"]) == 2
    err = capsys.readouterr().err
    assert "no weights here" in err and "Traceback" not in err
    assert main(["explain", str(img), "--model", "mymodels:gray", "--size", "32", "--methods", "gradient"]) == 2
    err = capsys.readouterr().err
    assert "cannot take the images" in err and "(1, 3, 32, 32)" in err and "Traceback" not in err


CHUNK_METHODS = {"gradcam": {}, "gradient": {}, "integrated_gradients": {"steps": 3},
                 "occlusion": {"window": 16, "stride": 16}, "rise": {"n_masks": 6, "grid": 3}}
_MODEL = TinyCNN(num_classes=5).eval()
_X = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
_REF = {m: it.explain(_MODEL, _X, m, [0, 1, 2, 3, 4], options={m: o} if o else None).maps
        for m, o in CHUNK_METHODS.items()}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(method=st.sampled_from(sorted(CHUNK_METHODS)), batch=st.one_of(st.none(), st.integers(1, 12)),
       form=st.sampled_from(["list", "tensor", "callable", "int"]), n_targets=st.integers(0, 7))
def test_property_maps_never_depend_on_chunking_and_wrong_lengths_always_raise(method, batch, form, n_targets):
    opts = {method: CHUNK_METHODS[method]} if CHUNK_METHODS[method] else None
    classes = [0, 1, 2, 3, 4]
    if form == "int":
        e = it.explain(_MODEL, _X, method, 3, batch_size=batch, options=opts)
        ref = it.explain(_MODEL, _X, method, 3, options=opts).maps
        torch.testing.assert_close(e.maps, ref, rtol=1e-5, atol=1e-6)
        return
    if form == "callable":
        e = it.explain(_MODEL, _X, method, lambda o: o[:, 2], batch_size=batch, options=opts)
        ref = it.explain(_MODEL, _X, method, lambda o: o[:, 2], batch_size=1, options=opts).maps
        torch.testing.assert_close(e.maps, ref, rtol=1e-5, atol=1e-6)
        return
    given_ = classes if n_targets == 5 else [k % 5 for k in range(n_targets)]
    target = torch.tensor(given_) if form == "tensor" else given_
    if len(given_) != 5:
        with pytest.raises(ValueError, match="targets for 5 images"):
            it.explain(_MODEL, _X, method, target, batch_size=batch, options=opts)
        return
    e = it.explain(_MODEL, _X, method, target, batch_size=batch, options=opts)
    torch.testing.assert_close(e.maps, _REF[method], rtol=1e-5, atol=1e-6)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_fuzzed_image_folders_are_explained_or_skipped_and_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    good = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(good).save(d / "ok.png")
    Image.fromarray(good).convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(good).convert("P").save(d / "palette.png")
    Image.fromarray(good).save(d / "really_png.jpg", format="PNG")  # wrong extension, readable
    Image.fromarray((good[..., 0].astype(np.uint16) * 200)).save(d / "sixteen.png")
    Image.fromarray(good).save(d / "<b>html&name<i>.png")
    (d / "empty.png").write_bytes(b"")
    full = (d / "ok.png").read_bytes()
    (d / "truncated.png").write_bytes(full[: len(full) // 2])
    (d / "garbage.jpg").write_bytes(rng.integers(0, 255, 500, dtype=np.uint8).tobytes())
    header = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0))
    (d / "huge_header.png").write_bytes(header + _png_chunk(b"IEND", b""))
    out = tmp_path / "rep"
    code = main(["explain", str(d), "--model", "tiny_cnn", "--methods", "gradcam,gradient", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    explained = {i["file"].split("/")[-1] for i in results["images"]}
    skipped = {f["file"].split("/")[-1] for f in results["failed"]}
    assert explained == {"ok.png", "cmyk.jpg", "palette.png", "really_png.jpg", "sixteen.png",
                         "<b>html&name<i>.png"}
    assert skipped == {"empty.png", "truncated.png", "garbage.jpg", "huge_header.png"}
    for name in skipped:
        assert name in err
    html = (out / "index.html").read_text()
    assert "<b>html&name<i>" not in html and "&lt;b&gt;html&amp;name&lt;i&gt;" in html
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "empty.png").write_bytes(b"")
    assert main(["explain", str(only_bad), "--model", "tiny_cnn", "--out", str(tmp_path / "rep2")]) == 2
    assert (tmp_path / "rep2" / "index.html").exists()


# ------------------------------------------------ every command, fuzzed with bad arguments: exit 0 or 2, one line

import re  # noqa: E402
from pathlib import Path  # noqa: E402

from interpretorch.cli import commands  # noqa: E402

_PROGRESS = re.compile(r"\d+%\||it/s|s/it|row/s|^\s*\r|\x1b\[A")


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    """Small inputs every command can start from, and bad files of every kind."""
    root = tmp_path_factory.mktemp("fuzz")
    imgs = root / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 70 * i, np.uint8)).save(imgs / f"{i}.png")
    probe = root / "probe"
    assert main(["make-probe", str(probe), "--images", "4", "--size", "32", "--seed", "3"]) == 0
    (root / "file.txt").write_text("a plain file\n")
    (root / "latin1.csv").write_bytes(b"file,label\ncaf\xe9.png,1\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "garbage.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    buf = __import__("io").BytesIO()
    torch.save({"x": Image.new("L", (1, 1))}, buf)  # a pickle naming a non-tensor class
    (root / "pickled.pt").write_bytes(buf.getvalue())
    (root / "blocked").write_text("a file where a folder is expected")
    return root


def _bad_values(env) -> dict[str, list[str]]:
    """Values no flag of that kind accepts."""
    return {
        "int": ["0", "-3", "abc", "", "1.5", "1e99"],
        "fraction": ["2", "-0.5", "x", "nan"],
        "model": ["", str(env / "garbage.pt2"), str(env / "missing.pt2"), str(env / "imgs"), "no.such.module:f",
                  "tiny_cnn:", "hf:", str(env / "empty.pt")],
        "path": [str(env / "missing"), str(env / "file.txt"), str(env / "latin1.csv"), str(env / "empty.pt")],
        "out": [str(env / "blocked"), str(env / "blocked" / "sub"), ""],
        "weights": [str(env / "garbage.pt2"), str(env / "pickled.pt"), str(env / "empty.pt"), str(env / "missing")],
        "device": ["tpu", "cuda:99", "", "cpu:x"],
        "floats3": ["1,2", "a,b,c", "1,2,3,4"],
        "target": ["abc", "-1", "1,2,3,4,5,6,7", "9999"],
    }


def _command_cases(env) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Per command: a valid, cheap argument list, and its flags with the kind of bad value each gets."""
    imgs, out = str(env / "imgs"), str(env / "out")
    model = {"--model": "model", "--size": "int", "--batch-size": "int", "--device": "device", "--mean": "floats3"}
    image_cmd = {**model, "--methods": "text", "--target": "target", "--layer": "text", "--out": "out",
                 "--option": "text", "--topk": "int", "--labels": "path", "--data": "path", "--limit": "int"}
    return {
        "explain": ([imgs, "--model", "tiny_cnn", "--methods", "gradient", "--out", out], image_cmd),
        "evaluate": ([imgs, "--model", "tiny_cnn", "--methods", "gradient", "--metrics", "deletion", "--out", out],
                     image_cmd),
        "layers": (["--model", "tiny_cnn"], model),
        "methods": ([], {"": "text"}),
        "explain-text": (["a sentence", "--methods", "gradient", "--out", out],
                         {"--model": "path", "--target": "text", "--ig-steps": "int", "--methods": "text",
                          "--out": "out", "": "blank"}),
        "sanity": ([imgs, "--model", "tiny_cnn", "--methods", "gradient", "--max-steps", "1", "--out", out],
                   {**model, "--methods": "text", "--blocks": "text", "--max-steps": "int", "--target": "target",
                    "--out": "out", "--mode": "text", "--init": "text", "--by-step": "text", "--metric": "text"}),
        "tcav": (["--images", imgs, "--target", "1", "--concepts", "dots", "--random", imgs, "--layers", "features",
                  "--model", "tiny_cnn", "--size", "32", "--runs", "3", "--set-size", "4", "--out", out],
                 {**model, "--layers": "text", "--concepts": "text", "--runs": "int", "--cache": "out",
                  "--target": "target", "--random": "path", "--images": "path", "--set-size": "int"}),
        "discover": (["--images", imgs, "--target", "1", "--layer", "features", "--model", "tiny_cnn", "--size", "32",
                      "--runs", "3", "--concepts", "2", "--out", out],
                     {**model, "--layer": "text", "--concepts": "int", "--runs": "int", "--method": "text",
                      "--random": "path", "--images": "path", "--target": "target"}),
        "crp": ([imgs, "--model", "tiny_cnn", "--size", "32", "--layer", "features", "--top", "1", "--out", out],
                {**model, "--layer": "text", "--target": "target", "--channels": "text", "--top": "int",
                 "--graph": "text", "--reference": "path", "--out": "out", "": "path"}),
        "dissect": (["--data", str(env / "probe"), "--model", "interpretorch.dissect.train:ProbeCNN",
                     "--layers", "conv1.2", "--out", out, "--no-report"],
                    {"--model": "model", "--device": "device", "--batch-size": "int", "--layers": "text",
                     "--weights": "weights", "--quantile": "fraction", "--iou": "fraction", "--data": "path",
                     "--workers": "int", "--out": "out", "--top-images": "int"}),
        "make-probe": ([str(env / "new-probe")], {"--images": "int", "--size": "int", "--mask-size": "int",
                                                  "": "out"}),
        "gandissect": (["--samples", "4", "--intervention-samples", "2", "--no-interventions", "--out", out],
                       {"--generator": "model", "--segmenter": "model", "--z-shape": "text", "--samples": "int",
                        "--quantile": "fraction", "--iou": "fraction", "--layers": "text", "--device": "device",
                        "--classes": "text", "--out": "out"}),
        "explain-generation": (["the red cat", "--methods", "ablation", "--max-new-tokens", "3", "--out", out],
                               {"--model": "path", "--source": "text", "--target": "text", "--methods": "text",
                                "--max-new-tokens": "int", "--score": "text", "--contrast": "text",
                                "--ig-steps": "int", "--batch-size": "int", "--out": "out", "": "blank"}),
        "gan-intervene": (["--layer", "layer2", "--concept", "sky", "--units", "1", "--samples", "4",
                           "--intervention-samples", "2", "--out", out],
                          {"--layer": "text", "--concept": "text", "--units": "int", "--region": "floats3",
                           "--other": "text", "--generator": "model", "--samples": "int", "--out": "out"}),
    }


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                max_size=12).filter(lambda t: t.strip() and t.strip() not in {"gradient", "features", "1", "3"})


def test_the_fuzzed_command_list_is_every_command():
    assert set(_command_cases(Path("/x"))) == set(commands())


@pytest.mark.parametrize("command", sorted(_command_cases(Path("/x"))))
@settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", 6)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_fuzzed_with_bad_arguments_exits_0_or_2_with_one_line(command, data, fuzz_env, capsys,
                                                                              monkeypatch):
    """One flag of the command gets a bad value (or junk is added): never a traceback, exit 0 or 2, and an error
    is one line."""
    monkeypatch.chdir(fuzz_env)
    base, flags = _command_cases(fuzz_env)[command]
    bad = _bad_values(fuzz_env)
    flag = data.draw(st.sampled_from(sorted(flags) + ["<junk>"]), label="flag")
    if flag == "<junk>":
        argv = [command, *base, data.draw(st.sampled_from(["--no-such-flag", "--", "-x", "--out"]) | _TEXT,
                                          label="junk")]
    else:
        kind = flags[flag]
        value = data.draw(_TEXT if kind == "text" else st.sampled_from(bad.get(kind, [""])) if kind != "blank"
                          else st.sampled_from(["", "   ", "\u200b"]), label="value")
        argv = [command, *base, value] if flag == "" else [command, *base, flag, value]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        # Progress bars, and the cost estimate printed before a run starts, are not the error: the error is one line.
        lines = [line for line in err.splitlines() if line.strip() and not _PROGRESS.search(line)
                 and not line.startswith(("interpretorch: skipping", "interpretorch: about "))]
        assert len(lines) == 1, (argv, err)
