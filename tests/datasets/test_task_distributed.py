"""A detection dataset run under torchrun (two CPU processes) gives the rows and summary of one process: each
image's detections once, each rank its own shards."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from interpretorch.cli import main
from interpretorch.data.synthetic import make_scene_set, save_scene_set
from interpretorch.datasets import read_rows
from interpretorch.datasets.writer import shard_files

ARGS = ["evaluate", "--model", "tiny_detector", "--task", "detection", "--methods", "gradcam",
        "--metrics", "pointing_game,energy_pointing_game", "--batch-size", "2", "--shard-size", "2"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.numerics
def test_task_run_in_two_processes_equals_one(tmp_path):
    save_scene_set(make_scene_set(5, seed=2), tmp_path / "scenes")  # 5: the ranks get 3 and 2 images
    data = str(tmp_path / "scenes")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
                           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                           "-m", "interpretorch.cli", *ARGS, "--data", data, "--out", str(two)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*ARGS, "--data", data, "--out", str(tmp_path / "one")]) == 0
    finally:
        torch.set_num_threads(before)
    one, both = read_rows(tmp_path / "one"), read_rows(two)
    assert {r for r, _, _ in shard_files(two)} == {0, 1}
    assert sorted(one["unit"]) == sorted(both["unit"]) and len(set(both["unit"])) == len(both["unit"])
    order = {u: i for i, u in enumerate(both["unit"])}
    for col in ("pointing_game", "energy_pointing_game", "score", "truth_iou"):
        a = np.array([one[col][i] for i in range(len(one["unit"]))], float)
        b = np.array([both[col][order[u]] for u in one["unit"]], float)
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=col)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s1["task"] == s2["task"] and s1["task"]["images"] == 5
