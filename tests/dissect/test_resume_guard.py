"""`dissect --resume` refuses a checkpoint of other weights, another preprocessing or changed data files
(before: a mix of two runs, or the old result returned silently); a second writer into --out is refused."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from interpretorch.cli import main
from interpretorch.dissect.train import ProbeCNN
from interpretorch.runstate import OutputLock

MODEL = "interpretorch.dissect.train:ProbeCNN"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    d = tmp_path_factory.mktemp("guard") / "probe"
    assert main(["make-probe", str(d), "--images", "6", "--size", "32", "--seed", "1"]) == 0
    return d


def _args(data, out, *extra):
    return ["dissect", "--data", str(data), "--model", MODEL, "--layers", "conv1.2", "--out", str(out),
            "--quantile", "0.02", "--batch-size", "3", "--no-report", *extra]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_resume_with_other_weights_size_or_data_is_refused(probe, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(probe, data)
    out = tmp_path / "out"
    assert main(_args(data, out)) == 0  # a complete checkpoint
    tally = (out / "conv1.2_tally.csv").read_bytes()
    capsys.readouterr()
    model = ProbeCNN()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert main(_args(data, out, "--resume", "--weights", str(tmp_path / "w.pt"))) == 2
    assert "weights differ" in _one_line_error(capsys)
    assert main(_args(data, out, "--resume", "--size", "24")) == 2
    assert "'preprocess'" in _one_line_error(capsys)
    assert main(_args(data, out, "--resume", "--mean", "0.4,0.4,0.4")) == 2
    assert "'preprocess'" in _one_line_error(capsys)
    image = sorted((data / "images").rglob("*.png"))[0]
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same names and count, one file replaced
    assert main(_args(data, out, "--resume")) == 2
    assert "dataset's files differ" in _one_line_error(capsys)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert main(_args(data, out, "--resume")) == 0  # the same run still resumes
    assert (out / "conv1.2_tally.csv").read_bytes() == tally


def test_a_second_dissect_into_one_folder_is_refused(probe, tmp_path, capsys):
    out = tmp_path / "out"
    with OutputLock(out):
        assert main(_args(probe, out)) == 2
        assert "in use by another interpretorch run" in _one_line_error(capsys)
        assert not (out / "checkpoint.pt").exists()
    assert main(_args(probe, out)) == 0
