"""Two CPU processes under torchrun give the per-image results of one process: each image once, each rank its
own shard files, rank 0's merged summary."""
from __future__ import annotations

import pytest

import json
import os
import socket
import subprocess
import sys

import numpy as np
import torch

from scale_data import TINY_CNN_FOLDERS, write_dataset
from interpretorch.cli import main
from interpretorch.datasets import read_rows
from interpretorch.datasets.writer import shard_files

ARGS = ["evaluate", "--model", "tiny_cnn", "--size", "32", "--methods", "gradcam,gradient", "--metrics",
        "deletion,average_drop,infidelity,pointing_game,energy_pointing_game", "--option", "deletion.step=0.25", "--option", "infidelity.n_perturb=3",
        "--batch-size", "2", "--shard-size", "2", "--boxes"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.numerics
def test_two_processes_equal_one(tmp_path):
    data = write_dataset(tmp_path, 7, boxes=True, folders=TINY_CNN_FOLDERS)  # 7: the ranks get 4 and 3 images
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
                           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                           "-m", "interpretorch.cli", *ARGS, str(tmp_path / "boxes"), "--data", str(data),
                           "--out", str(two)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, str(tmp_path / "boxes"), "--data", str(data), "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(before)
    one_rows, two_rows = read_rows(tmp_path / "one"), read_rows(two)
    assert {r for r, _, _ in shard_files(two)} == {0, 1} and {r for r, _, _ in shard_files(tmp_path / "one")} == {0}
    pairs = list(zip(two_rows["image"], two_rows["method"]))
    assert len(pairs) == len(set(pairs)) == 14  # every image once per method, none twice
    assert one_rows["image"] == two_rows["image"] and one_rows["method"] == two_rows["method"]
    for col in ("deletion", "win", "infidelity", "pointing_game", "energy_pointing_game", "pred_prob"):
        np.testing.assert_allclose(np.array(one_rows[col], float), np.array(two_rows[col], float), rtol=1e-4,
                                   atol=1e-5, err_msg=col)
    # Average Drop divides a drop of probability by the clean probability: compared as that drop (probability
    # units), since a rounding of 1.5e-6 in the masked score (batches of other images, seen on one CPU) is 1.2e-5
    # of the quotient where the clean probability is 0.12
    y1, y2 = np.array(one_rows["pred_prob"], float), np.array(two_rows["pred_prob"], float)
    np.testing.assert_allclose(np.array(one_rows["average_drop"], float) * y1,
                               np.array(two_rows["average_drop"], float) * y2, rtol=1e-4, atol=1e-5,
                               err_msg="average_drop x pred_prob")
    assert one_rows["target"] == two_rows["target"]
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s1["images"] == s2["images"] == 7
    for m in ("gradcam", "gradient"):
        assert abs(s1["table"][m]["deletion"]["mean"] - s2["table"][m]["deletion"]["mean"]) < 1e-5
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["sessions"][-1]["world"] == 2 and sorted(r["images"] for r in manifest["sessions"][-1]["ranks"]) == [3, 4]
    assert (two / "index.html").exists()
