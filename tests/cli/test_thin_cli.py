"""The thin CLI (issue 25): what the CLI used to patch into results after the run is given to the library, the
dataset run is a library call, labels and output folders are read by the library."""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.labels import LabelError, image_labels, parent_folder_labels
from interpretorch.models import TinyCNN
from interpretorch.run import SANITY_PAGE, run
from interpretorch.runstate import NotWritable, writable_folder


def test_run_records_what_the_report_states_without_aliasing_the_callers_values():
    model, x = TinyCNN(num_classes=5).eval(), torch.randn(2, 3, 16, 16)
    failed = [{"file": "bad.png", "error": "not an image"}]
    settings = {"profile": "cpu", "changed": {}}
    result = run(model, x, ["gradient"], failed=failed, settings=settings, device_label="cuda")
    assert result.failed == failed and result.settings == settings and result.device == "cuda"
    assert result.failed is not failed and result.settings is not settings  # the caller's objects stay theirs
    assert run(model, x, ["gradient"]).device == "cpu" and run(model, x, ["gradient"]).settings is None


def test_run_with_sanity_gives_the_cascading_check_of_its_own_methods_targets_and_layer():
    from interpretorch.sanity import model_randomization

    torch.manual_seed(0)
    model, x = TinyCNN(num_classes=5).eval(), torch.randn(2, 3, 16, 16)
    result = run(model, x, ["gradient", "gradcam"], target=[1, 3], sanity=True, sanity_steps=2)
    check = result.sanity_check
    assert check.mode == "cascading" and len(check.steps) == 2 and check.methods == ["gradient", "gradcam"]
    assert check.target.tolist() == [1, 3] and check.config["layer"] == result.layer  # the run's classes, layer
    direct = model_randomization(model, x, ["gradient", "gradcam"], target=[1, 3], layer=result.layer,
                                 max_steps=2)
    for m in ("gradient", "gradcam"):
        assert result.sanity[m]["report"] == SANITY_PAGE
        assert result.sanity[m]["passes"] == direct.verdicts[m].passes
        assert result.sanity[m]["value"] == pytest.approx(direct.verdicts[m].to_dict()["value"], abs=1e-6)


def test_image_labels_match_path_name_or_stem_and_refuse_what_names_no_image(tmp_path):
    names = ["/data/a/cat1.png", "/data/b/dog2.jpg", "/data/c/x.png"]
    classes = ["tabby, tabby cat", "loudspeaker, speaker"]
    f = tmp_path / "labels.csv"
    f.write_text("# comment\ncat1.png,Tabby_cat\ndog2\t1\n")
    assert image_labels(f, names, classes) == [0, 1, None]
    f.write_text("cat1.png\n")
    with pytest.raises(LabelError, match="line 1: expected 'IMAGE,LABEL'"):
        image_labels(f, names, classes)
    f.write_text("other.png,0\n")
    with pytest.raises(LabelError, match="no line names any of the images"):
        image_labels(f, names, classes)
    with pytest.raises(LabelError, match="cannot read it"):
        image_labels(tmp_path / "missing.csv", names, classes)
    assert parent_folder_labels(["/r/speaker/1.png", "/r/0/2.png"], classes) == [1, 0]
    with pytest.raises(LabelError, match="did you mean"):
        parent_folder_labels(["/r/speakr/1.png"], classes)


def test_writable_folder_creates_and_refuses_in_one_line(tmp_path):
    assert writable_folder(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotWritable, match="is an existing file, not a folder"):
        writable_folder(tmp_path / "file")
    with pytest.raises(NotWritable, match="is empty"):
        writable_folder(" ")


def test_the_cli_replaces_a_loaded_model_it_adjusts(monkeypatch):
    import interpretorch.models as models
    from interpretorch.cli.common import load_model_from_args

    original = models.load_model("tiny_cnn")
    before = original.preprocess
    monkeypatch.setattr(models, "load_model", lambda *a, **k: original)
    args = argparse.Namespace(model="tiny_cnn", device="cpu", size=24, mean=None, std=(0.5, 0.5, 0.5))
    got = load_model_from_args(args)
    assert got is not original and original.preprocess is before  # the library's object is not changed
    assert got.preprocess.size == 24 and tuple(got.preprocess.std) == (0.5, 0.5, 0.5) and got.model is original.model


def _dataset(tmp_path, n=3):
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_explain_data_with_a_pixel_method_runs_and_a_layer_for_it_is_one_line(tmp_path, capsys):
    data = _dataset(tmp_path)
    base = ["explain", "--data", str(data), "--model", "tiny_cnn", "--size", "32", "--methods", "gradient"]
    assert main(base + ["--out", str(tmp_path / "o")]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["images_done"] == 3 and manifest["layer"] is None
    capsys.readouterr()
    assert main(base + ["--layer", "features", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interpretorch: error: --layer is for the layer methods; gradient explain the input pixels"]


def test_a_dataset_job_refuses_contradicting_settings_before_loading_anything(tmp_path):
    from interpretorch.datasets.runner import DatasetJob
    from interpretorch.datasets.streams import DatasetError

    def never(device):
        raise AssertionError("the model is not loaded for a refused job")

    base = dict(data=tmp_path, out=tmp_path / "o", load_model=never, methods=["gradient"])
    for kw, message in (({"workers": -1}, "--workers must be >= 0"), ({"boxes": "b", "masks": "m"}, "not both"),
                        ({"metrics": ["deletion"]}, "--metrics is for evaluate")):
        with pytest.raises(DatasetError, match=message):
            DatasetJob(**base, **kw)
    job = DatasetJob(**base)
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.workers = 3  # a job is a value: the runner never changes it
