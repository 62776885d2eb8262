"""Two CPU processes under torchrun give exactly the counts of one process."""
from __future__ import annotations

import pytest

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from dist_worker import counts
from interpretorch.dissect.probe import make_probe

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.numerics
def test_two_processes_equal_one(tmp_path):
    data = make_probe(tmp_path / "probe", n_images=21, size=64, seed=5)  # 21: the shards differ in size
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
          "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
          str(WORKER), str(data), str(tmp_path / "two.pt"), "1"])
    # one image per call in both runs: a kernel may round a row differently in other batch compositions (batches
    # of 3 here vs 2 per shard compared equal on one CPU only by luck); the split itself must change no count
    one = counts(str(data), 1)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for layer in ("features.2", "features.8"):
        for key in ("thresholds", "top", "intersect", "activation", "truth"):
            assert torch.equal(one[layer][key], two[layer][key]), (layer, key)
        assert one[layer]["images"] == two[layer]["images"] == 21
        assert one[layer]["intersect"].sum() > 0
        assert two[layer]["top"].shape[1] == 12 and two[layer]["top"].max() < 21  # no shard padding kept
