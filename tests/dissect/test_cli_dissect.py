"""`interpretorch make-probe` and `interpretorch dissect`: files written, user errors, torchrun = one process."""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from interpretorch.cli import main

MODEL = "interpretorch.dissect.train:ProbeCNN"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli") / "probe"
    assert main(["make-probe", str(d), "--images", "12", "--size", "48", "--seed", "2"]) == 0
    return d


def test_make_probe_refuses_a_used_folder(probe, capsys):
    assert main(["make-probe", str(probe), "--images", "2"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert len((probe / "index.csv").read_text().splitlines()) == 13  # untouched


def test_dissect_writes_tally_summary_and_report(probe, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["dissect", "--data", str(probe), "--model", MODEL, "--layers", "conv1.2,conv3.2",
               "--out", str(out), "--quantile", "0.01", "--batch-size", "5", "--report-units", "4"])
    assert rc == 0
    assert "units covering" in capsys.readouterr().out
    with open(out / "conv1.2_tally.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and sorted(int(r["unit"]) for r in rows) == list(range(16))
    assert list(rows[0])[:4] == ["unit", "category", "label", "score"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["layers"]) == {"conv1.2", "conv3.2"} and summary["images"] == 12
    assert summary["layers"]["conv3.2"]["units"] == 64
    html = (out / "conv3.2.html").read_text()
    assert f"{summary['layers']['conv3.2']['detectors']}/64</b> units covering" in html
    # --resume after a finished run reuses the checkpoint and writes the same tally
    before = (out / "conv1.2_tally.csv").read_bytes()
    assert main(["dissect", "--data", str(probe), "--model", MODEL, "--layers", "conv1.2,conv3.2",
                 "--out", str(out), "--quantile", "0.01", "--batch-size", "5", "--resume", "--no-report"]) == 0
    assert (out / "conv1.2_tally.csv").read_bytes() == before


@pytest.mark.parametrize("extra, message", [
    (["--layers", "conv9"], "no layer 'conv9'"),
    (["--layers", "conv1.2", "--resume"], "no checkpoint"),
    (["--layers", "conv1.2", "--weights", "missing.pt"], "no such file"),
])
def test_user_errors(probe, tmp_path, capsys, extra, message):
    rc = main(["dissect", "--data", str(probe), "--model", MODEL, "--out", str(tmp_path / "o"), *extra])
    assert rc == 2 and message in capsys.readouterr().err


def test_escaping_dataset_is_a_user_error(probe, tmp_path, capsys):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(probe, bad)
    lines = (bad / "index.csv").read_text().splitlines()
    lines[3] = lines[3].replace("probe/000002.png", "../../secret.png", 1)
    (bad / "index.csv").write_text("\n".join(lines) + "\n")
    assert main(["dissect", "--data", str(bad), "--model", MODEL, "--layers", "conv1.2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "index.csv line 4" in capsys.readouterr().err


@pytest.mark.numerics
def test_torchrun_two_processes_write_the_same_tally(probe, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["dissect", "--data", str(probe), "--model", MODEL, "--layers", "conv2.2", "--quantile", "0.02",
              "--batch-size", "1", "--no-report"]  # batch 1: the shards' batches then hold the same rows
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
           "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "interpretorch.cli"]
    proc = subprocess.run(cmd + common + ["--out", str(tmp_path / "two")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (tmp_path / d / "conv2.2_tally.csv" for d in ("one", "two"))
    assert one.read_bytes() == two.read_bytes()
    assert json.loads((tmp_path / "one" / "summary.json").read_text()) == \
        json.loads((tmp_path / "two" / "summary.json").read_text())
