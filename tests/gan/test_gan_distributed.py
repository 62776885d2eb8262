"""Two CPU processes under torchrun give exactly the counts of one process."""
from __future__ import annotations

import pytest

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from gan_dist_worker import counts

WORKER = Path(__file__).with_name("gan_dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.numerics
def test_two_processes_equal_one(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(WORKER.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--nnodes", "1",
                           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
                           str(WORKER), str(tmp_path / "two.pt"), "1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # one sample per call in both runs: a transposed convolution's kernels round differently for other batch
    # compositions (last bits of up2.0's activations differed with batches of 3 vs 4), the split itself does not
    one = counts(1)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert torch.equal(one["concept_pixels"], two["concept_pixels"])
    for layer in ("up1", "up2.0"):
        for key in ("thresholds", "top", "intersect", "activation", "truth"):
            assert torch.equal(one[layer][key], two[layer][key]), (layer, key)
        assert one[layer]["images"] == two[layer]["images"] == 23
        assert one[layer]["intersect"].sum() > 0
        assert two[layer]["top"].shape[1] == 13 and two[layer]["top"].max() < 23
