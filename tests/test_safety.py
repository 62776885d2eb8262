"""Nothing from a file or folder runs unless the user says so: model archives, the working directory, weights."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import interpretorch as it
from interpretorch.cli import main
from interpretorch.models import TinyCNN
from interpretorch.models.safe_load import (UnsafeModelFile, check_export_archive, safe_graph_target,
                                            safe_sympy_expression)

SRC = str(Path(__file__).resolve().parents[1] / "src")


class _Payload:
    """Unpickling this creates the marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _payload_bytes(marker: Path) -> bytes:
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    return buf.getvalue()


def _exported(path: Path) -> Path:
    model, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(program, str(path))
    return path


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy the archive ``src`` to ``dst`` with ``edit(root, {name: bytes})`` changing its entries."""
    with zipfile.ZipFile(src) as zin:
        entries = {n: zin.read(n) for n in zin.namelist()}
    root = next(iter(entries)).split("/")[0]
    edit(root, entries)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for n, data in entries.items():
            zout.writestr(n, data)
    return dst


def _pickled_weight(root: str, entries: dict, marker: Path) -> None:
    name = f"{root}/data/weights/model_weights_config.json"
    cfg = json.loads(entries[name])
    fqn = next(iter(cfg["config"]))
    cfg["config"][fqn].update(use_pickle=True, path_name="weight_payload")
    entries[name] = json.dumps(cfg).encode()
    entries[f"{root}/data/weights/weight_payload"] = _payload_bytes(marker)


@pytest.fixture(scope="module")
def clean_pt2(tmp_path_factory) -> Path:
    return _exported(tmp_path_factory.mktemp("pt2") / "m.pt2")


def _image(tmp_path: Path) -> Path:
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(img)
    return img


def test_a_pt2_with_a_pickled_weight_is_refused_and_its_payload_never_runs(clean_pt2, tmp_path, capsys):
    marker = tmp_path / "RAN"
    evil = _rewrite(clean_pt2, tmp_path / "evil.pt2", lambda r, e: _pickled_weight(r, e, marker))
    img = _image(tmp_path)
    for argv in (["explain", str(img), "--methods", "gradient", "--size", "32", "--out", str(tmp_path / "r")],
                 ["layers", "--size", "32"]):
        assert main([*argv, "--model", str(evil)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "--trust-model-file" in err[0] and "pickle" in err[0], err
        assert not marker.exists()
    with pytest.raises(UnsafeModelFile, match="trust_code=True"):
        it.load_model(str(evil))
    assert not marker.exists()
    # the payload is real: torch itself runs it, which is what the flag allows
    try:
        it.load_model(str(evil), trust_code=True)
    except Exception:  # noqa: BLE001 - the payload is not a tensor, so torch fails after running it
        pass
    assert marker.exists()


def test_a_normal_exported_program_still_loads_and_explains(clean_pt2, tmp_path, capsys):
    check_export_archive(clean_pt2)
    img = _image(tmp_path)
    assert main(["explain", str(img), "--model", str(clean_pt2), "--size", "32", "--methods", "gradcam,gradient",
                 "--layer", "features", "--out", str(tmp_path / "r")]) == 0
    assert main(["layers", "--model", str(clean_pt2), "--size", "32"]) == 0
    assert "features" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["constant_object", "guards", "sympy", "target", "sample_inputs", "aoti"])
def test_every_way_a_pt2_can_run_code_is_refused_before_torch_reads_it(clean_pt2, tmp_path, case):
    marker = tmp_path / "RAN"

    def edit(root: str, entries: dict) -> None:
        model_json = f"{root}/models/model.json"
        doc = json.loads(entries[model_json])
        if case == "constant_object":
            name = f"{root}/data/constants/model_constants_config.json"
            entries[name] = json.dumps({"config": {"obj": {"path_name": "opaque_obj_0", "is_param": False,
                                                           "use_pickle": True, "tensor_meta": None}}}).encode()
            entries[f"{root}/data/constants/opaque_obj_0"] = _payload_bytes(marker)
        elif case == "guards":
            doc["guards_code"] = [f"open({str(marker)!r}, 'w')"]
        elif case == "sympy":
            values = doc["graph_module"]["graph"]["tensor_values"]
            first = next(v for v in values.values() if any("as_expr" in s for s in v["sizes"]))
            sym = next(s for s in first["sizes"] if "as_expr" in s)
            sym["as_expr"]["expr_str"] = f"__import__('builtins').open({str(marker)!r}, 'w')"
        elif case == "target":
            doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.ops.load_library"
        elif case == "sample_inputs":
            entries[f"{root}/data/sample_inputs/model.pt"] = _payload_bytes(marker)
        elif case == "aoti":
            entries[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"
        entries[model_json] = json.dumps(doc).encode()

    bad = _rewrite(clean_pt2, tmp_path / f"{case}.pt2", edit)
    with pytest.raises(UnsafeModelFile, match="--trust-model-file"):
        check_export_archive(bad)
    with pytest.raises(UnsafeModelFile):
        it.load_model(str(bad))
    assert not marker.exists()


def test_the_expression_and_target_checks_accept_what_torch_writes_and_nothing_callable():
    for ok in ["Symbol('s77', positive=True, integer=True)", "Mul(Integer(2), Symbol('s0'))", "FloorDiv(s0, 2) + 1",
               "Max(1, s0)", "Float('1.5', precision=53)", "Eq(Mod(s0, 4), 0)"]:
        assert safe_sympy_expression(ok), ok
    for bad in ["__import__('os').system('x')", "Max('__import__(1)')", "eval('1')", "s0.__class__", "s0[0]",
                "lambdify(s0, 1)", "sympify('1')", "(lambda: 1)()", "open('f')"]:
        assert not safe_sympy_expression(bad), bad
    for ok in ["torch.ops.aten.conv2d.default", "_operator.getitem", "math.sqrt", "torch.sym_max",
               "torch.ops.higher_order.cond"]:
        assert safe_graph_target(ok), ok
    for bad in ["torch.ops.load_library", "torch.os.system", "_operator.methodcaller", "builtins.eval",
                "torch.ops.myns.op.default", "torch.hub.load", "#ext:op"]:
        assert not safe_graph_target(bad), bad


def test_an_hf_model_with_its_own_code_is_refused_unless_trusted(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "custom_x", "auto_map": {"AutoConfig": "configuration_x.XConfig",
                                               "AutoModelForImageClassification": "modeling_x.XModel"}}))
    marker = tmp_path / "RAN"
    code = f"open({str(marker)!r}, 'w')\nraise SystemExit('shipped code ran')\n"
    (folder / "configuration_x.py").write_text(code)
    (folder / "modeling_x.py").write_text(code)
    assert main(["layers", "--model", f"hf:{folder}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "trust_remote_code" in err[0] and "--trust-model-file" in err[0], err
    assert not marker.exists()


def test_a_fake_pt2_is_one_line_without_torchs_log(tmp_path):
    fake = tmp_path / "fake.pt2"
    fake.write_bytes(b"not a zip at all")
    run = subprocess.run([sys.executable, "-P", "-m", "interpretorch.cli", "layers", "--model", str(fake)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, cwd=tmp_path,
                         timeout=120)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "not a torch.export program" in lines[0], run.stderr


def test_modules_in_the_working_directory_never_shadow_installed_ones(tmp_path):
    for name in ("numpy", "PIL", "matplotlib", "tqdm"):
        (tmp_path / f"{name}.py").write_text(f"open({str(tmp_path / ('RAN_' + name))!r}, 'w')\n"
                                             "raise SystemExit('shadowed')\n")
    (tmp_path / "mymodels.py").write_text("from interpretorch.models import TinyCNN\n"
                                          "def good():\n    return TinyCNN(num_classes=3)\n")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    env = {**os.environ, "PYTHONPATH": SRC}
    for model in ("tiny_cnn", "mymodels:good"):
        run = subprocess.run([sys.executable, "-P", "-m", "interpretorch.cli", "explain", "a.png", "--model", model,
                              "--size", "32", "--methods", "gradcam", "--out", "rep"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert not list(tmp_path.glob("RAN_*")), model


# ---------------------------------------------------------------- one line and exit 2, never a traceback

PROBE_MODEL = "interpretorch.dissect.train:ProbeCNN"


def one_line(capsys, *needles: str) -> str:
    """The single non-blank stderr line of the last command, checked to hold every needle."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def parse_error(capsys, argv: list[str], *needles: str) -> str:
    """Run ``argv``, which argparse refuses: exit 2 and one line."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return one_line(capsys, *needles)


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("probe") / "set"
    assert main(["make-probe", str(d), "--images", "4", "--size", "32", "--seed", "1"]) == 0
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(d / f"{i}.png")
    return d


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A folder path that cannot be created: its parent is a regular file (running as root, permissions won't do)."""
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "out"


@pytest.mark.parametrize("command", ["explain", "explain-text", "dissect", "make-probe"])
def test_an_out_folder_that_cannot_be_written_is_one_line(command, blocked, probe, images, capsys):
    argv = {"explain": ["explain", str(images), "--model", "tiny_cnn", "--methods", "gradient", "--out", str(blocked)],
            "explain-text": ["explain-text", "a sentence", "--out", str(blocked)],
            "dissect": ["dissect", "--data", str(probe), "--model", PROBE_MODEL, "--layers", "conv1.2",
                        "--out", str(blocked)],
            "make-probe": ["make-probe", str(blocked), "--images", "2", "--size", "16"]}[command]
    assert main(argv) == 2
    one_line(capsys, "cannot be written")


def test_explain_text_out_naming_a_file_and_tcav_cache_naming_a_file(tmp_path, images, capsys):
    (tmp_path / "file").write_text("keep me")
    assert main(["explain-text", "a sentence", "--out", str(tmp_path / "file")]) == 2
    one_line(capsys, "existing file")
    assert main(["tcav", "--images", str(images), "--target", "1", "--concepts", "dots", "--random", str(images),
                 "--layers", "features", "--model", "tiny_cnn", "--out", str(tmp_path / "o"),
                 "--cache", str(tmp_path / "file")]) == 2
    one_line(capsys, "--cache", "existing file")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("command", ["evaluate", "layers"])
def test_a_size_too_small_for_the_model_is_one_line(command, images, tmp_path, capsys):
    argv = [command, "--model", "tiny_cnn", "--size", "1"]
    if command == "evaluate":
        argv += [str(images), "--methods", "gradient", "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    one_line(capsys, "--size 1")


def _garbage_and_pickle(tmp_path: Path, marker: Path) -> dict[str, Path]:
    (tmp_path / "garbage.pt").write_bytes(b"\x00\x01garbage" * 10)
    (tmp_path / "pickled.pt").write_bytes(_payload_bytes(marker))
    return {"garbage": tmp_path / "garbage.pt", "pickled": tmp_path / "pickled.pt"}


@pytest.mark.parametrize("kind", ["garbage", "pickled"])
def test_bad_weights_files_are_one_line_and_never_run(kind, tmp_path, capsys):
    marker = tmp_path / "RAN"
    path = _garbage_and_pickle(tmp_path, marker)[kind]
    expect = "not a torch weights file" if kind == "garbage" else "could run code"
    assert main(["dissect", "--data", str(tmp_path), "--model", PROBE_MODEL, "--layers", "conv1.2",
                 "--weights", str(path), "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "--weights", expect)
    for flag in ("--true-weights", "--random-weights"):
        assert main(["sanity", "--mode", "data", flag, str(path), "--out", str(tmp_path / "s")]) == 2
        one_line(capsys, flag, expect)
    assert not marker.exists()


def test_a_text_model_folder_with_a_pickled_weights_file_is_one_line_and_never_runs(tmp_path, capsys):
    from interpretorch.transformers.text import minilm_path

    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (minilm_path() / name).exists():
            (folder / name).write_bytes((minilm_path() / name).read_bytes())
    marker = tmp_path / "RAN"
    torch.save({"embeddings.word_embeddings.weight": _Payload(marker)}, folder / "pytorch_model.bin")
    assert main(["explain-text", "a sentence", "--model", str(folder), "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "could run code")
    assert not marker.exists()


def test_a_z_shape_that_does_not_fit_the_generator_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "gan"))
    assert main(["gandissect", "--generator", "gan_toys:toy_generator", "--segmenter", "gan_toys:toy_segmenter",
                 "--z-shape", "5,2", "--samples", "4", "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "--z-shape 5,2 does not fit the generator")


def test_ctrl_c_during_a_dataset_run_or_dissect_is_one_line_and_exit_130(images, probe, tmp_path, monkeypatch,
                                                                          capsys):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("interpretorch.datasets.job.explain_dataset", interrupt)
    assert main(["explain", "--data", str(images), "--model", "tiny_cnn", "--methods", "gradient",
                 "--out", str(tmp_path / "o")]) == 130
    one_line(capsys, "interrupted")
    monkeypatch.setattr("interpretorch.dissect.run.dissect", interrupt)
    assert main(["dissect", "--data", str(probe), "--model", PROBE_MODEL, "--layers", "conv1.2",
                 "--out", str(tmp_path / "d")]) == 130
    one_line(capsys, "interrupted")


# ---------------------------------------------------------------- clear messages


def test_a_non_utf8_list_file_or_index_csv_is_named(tmp_path, images, probe, capsys):
    listing = tmp_path / "list.csv"
    listing.write_bytes(b"file,label\n" + str(images / "0.png").encode() + b",caf\xe9\n")
    assert main(["explain", "--data", str(listing), "--model", "tiny_cnn", "--methods", "gradient",
                 "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "list.csv", "UTF-8")
    import shutil

    broken = tmp_path / "broden"
    shutil.copytree(probe, broken)
    (broken / "index.csv").write_bytes((broken / "index.csv").read_bytes() + b"caf\xe9\n")
    assert main(["dissect", "--data", str(broken), "--model", PROBE_MODEL, "--layers", "conv1.2",
                 "--out", str(tmp_path / "d")]) == 2
    one_line(capsys, "index.csv", "UTF-8")


def test_explain_text_target_must_be_a_class_index(capsys):
    parse_error(capsys, ["explain-text", "a sentence", "--target", "abc"], "--target", "class index")


def test_metric_options_have_their_own_key_space_and_values_are_checked(images, tmp_path, capsys):
    base = [str(images), "--model", "tiny_cnn", "--methods", "gradcam,gradient", "--out", str(tmp_path / "o")]
    assert main(["evaluate", *base, "--option", "deletion.step=0.05"]) == 2
    line = one_line(capsys, "deletion is a metric", "--data")
    assert "did you mean" not in line
    assert main(["explain", *base, "--option", "gradcam.relu=banana"]) == 2
    one_line(capsys, "gradcam.relu='banana'", "True or False")
    assert main(["explain", *base, "--option", "gradcam.relu=3"]) == 2
    one_line(capsys, "True or False")
    data = ["evaluate", "--data", str(images), "--model", "tiny_cnn", "--methods", "gradient",
            "--out", str(tmp_path / "d")]
    assert main([*data, "--option", "deletion.stepp=0.1"]) == 2
    one_line(capsys, "deletion metric takes no option 'stepp'", "step")
    assert main([*data, "--option", "insertion.step=fast"]) == 2
    one_line(capsys, "insertion.step='fast'", "a number")


def test_too_few_random_runs_are_refused_while_parsing(images, capsys):
    base = ["--images", str(images), "--target", "1", "--model", "tiny_cnn"]
    parse_error(capsys, ["tcav", *base, "--concepts", "dots", "--random", str(images), "--layers", "features",
                         "--runs", "2"], "at least 3 random runs")
    parse_error(capsys, ["discover", *base, "--layer", "features", "--runs", "2"], "at least 3 random runs")


def test_discover_with_more_concepts_than_the_layer_has_channels(images, tmp_path, capsys):
    assert main(["discover", "--images", str(images), "--target", "1", "--model", "tiny_cnn", "--size", "32",
                 "--layer", "features", "--concepts", "500", "--runs", "3", "--out", str(tmp_path / "o")]) == 2
    one_line(capsys, "500 concepts", "at most")


def test_an_empty_model_name_a_negative_region_and_unknown_flags_are_one_line(images, tmp_path, capsys):
    assert main(["layers", "--model", ""]) == 2
    one_line(capsys, "--model is empty")
    parse_error(capsys, ["gan-intervene", "--layer", "layer2", "--concept", "sky", "--units", "2",
                         "--region", "-4,0,8,8"], "--region", "0 <= x0")
    line = parse_error(capsys, ["explain", "--no-such-flag"], "unrecognized arguments", "--help")
    assert line.startswith("interpretorch explain: error:")
    parse_error(capsys, ["no-such-command"], "invalid choice")
