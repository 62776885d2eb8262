"""Finished work survives kills and is never mixed: with the default shard size a SIGKILLed run keeps every
finished batch (the per-batch part files) and a SIGTERMed one stops like Ctrl-C; the resumed run equals the
uninterrupted one (float32 noise: rtol 1e-4); one writer per output folder; a resume with other weights or
changed image files is refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import interpretorch
import scale_worker
from scale_data import PRE, TINY_CNN_FOLDERS, tiny_model, write_dataset
from interpretorch.cli import main
from interpretorch.datasets import DatasetError, explain_dataset, load_maps, open_images, read_rows
from interpretorch.datasets.writer import part_files, shard_files
from interpretorch.runstate import LOCK_NAME, FolderBusy, OutputLock

WORKER = Path(__file__).with_name("scale_worker.py")
SRC = str(Path(interpretorch.__file__).resolve().parents[1])
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([SRC, str(WORKER.parent)])}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("dur"), 7)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[dict, dict]:
    """The uninterrupted run (rows, gradcam maps), in this process."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref") / "out"
    scale_worker.run(str(data), str(out), save_maps=True)
    return read_rows(out), load_maps(out, "gradcam")


def _same_rows(a: dict, b: dict, rtol: float = 1e-4) -> None:
    assert a["image"] == b["image"] and a["method"] == b["method"] and a["path"] == b["path"]
    for col in a:
        if col in ("path", "method", "error", "image", "label", "target", "pred"):
            assert a[col] == b[col], col
        else:
            np.testing.assert_allclose(np.array(a[col], dtype=float), np.array(b[col], dtype=float), rtol=rtol,
                                       atol=1e-5, err_msg=col)


def _worker(data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), str(data), str(out), *extra], capture_output=True,
                          text=True, timeout=300, env=ENV, cwd=WORKER.parent)


def test_sigkill_with_default_shards_keeps_every_finished_batch(data, reference, tmp_path):
    out = tmp_path / "out"
    proc = _worker(data, out, "fresh", "2", "256", "KILL", "maps")  # killed after 2 of 4 batches, no shard yet
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not shard_files(out) and len(part_files(out)) == 2  # before: nothing survived this
    assert (out / LOCK_NAME).exists()  # left by the killed run, but no longer locked: taken over
    OutputLock(out).acquire().release()
    res = scale_worker.run(str(data), str(out), resume=True, shard_images=256, save_maps=True)
    assert res.done_now == 3  # only the 3 images never finished are computed again
    assert not part_files(out)
    rows, maps = reference
    _same_rows(read_rows(out), rows)
    got = load_maps(out, "gradcam")
    assert sorted(got) == sorted(maps)
    for i in maps:  # float16 storage
        np.testing.assert_allclose(got[i], maps[i], rtol=2e-3, atol=2e-3 * np.abs(maps[i]).max())


def test_sigkill_right_after_a_shard_leaves_no_duplicate_rows(data, reference, tmp_path):
    out = tmp_path / "out"
    proc = _worker(data, out, "fresh", "3", "4", "KILL")  # shard of batches 1-2, then batch 3 as a part
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len(shard_files(out)) == 1 and len(part_files(out)) == 1
    res = scale_worker.run(str(data), str(out), resume=True, shard_images=4)
    assert res.done_now == 1
    _same_rows(read_rows(out), reference[0])


def test_sigterm_stops_like_ctrl_c_and_keeps_the_finished_batches(data, reference, tmp_path):
    out = tmp_path / "out"
    proc = _worker(data, out, "fresh", "2", "256", "TERM")
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert len(set(read_rows(out)["image"])) == 4 and not part_files(out)  # written as a shard on the way out
    assert not (out / LOCK_NAME).exists()
    assert scale_worker.run(str(data), str(out), resume=True, shard_images=256).done_now == 3
    _same_rows(read_rows(out), reference[0])


SLOW = """import sys, time
from interpretorch.datasets import writer
add = writer.ShardWriter.add
def slow(self, *a, **k):
    add(self, *a, **k)
    time.sleep(0.4)
writer.ShardWriter.add = slow
from interpretorch.cli import main
sys.exit(main(sys.argv[1:]))
"""
CLI = ["evaluate", "--model", "tiny_cnn", "--size", "32", "--batch-size", "2", "--methods", "gradcam,gradient",
       "--metrics", "deletion,average_drop"]


def test_cli_sigterm_exits_143_with_one_line_and_resumes_to_the_same_rows(tmp_path, capsys):
    data = write_dataset(tmp_path, 12, folders=TINY_CNN_FOLDERS)
    out = tmp_path / "out"
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW)
    proc = subprocess.Popen([sys.executable, str(script), *CLI, "--data", str(data), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 120
    while len(part_files(out)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interpretorch: stopped by SIGTERM")
    kept = set(read_rows(out)["image"])
    assert 4 <= len(kept) < 12
    assert main([*CLI, "--data", str(data), "--out", str(out), "--resume"]) == 0
    assert main([*CLI, "--data", str(data), "--out", str(tmp_path / "whole")]) == 0
    _same_rows(read_rows(out), read_rows(tmp_path / "whole"))


def test_a_second_writer_is_refused(tmp_path, capsys):
    data = write_dataset(tmp_path, 3, folders=TINY_CNN_FOLDERS)
    out = tmp_path / "out"
    with OutputLock(out):  # another run holds the folder
        with pytest.raises(FolderBusy, match=f"pid {os.getpid()}"):
            OutputLock(out).acquire()
        assert main([*CLI, "--data", str(data), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "in use by another interpretorch run" in err[0]
        assert not shard_files(out)
    assert not (out / LOCK_NAME).exists()
    (out / LOCK_NAME).write_text("999999999 elsewhere\n")  # left by a killed run: not locked, taken over
    assert main([*CLI, "--data", str(data), "--out", str(out)]) == 0
    assert not (out / LOCK_NAME).exists()


def test_resume_with_other_weights_or_changed_files_is_refused(data, tmp_path):
    out = tmp_path / "o"
    scale_worker.run(str(data), str(out))
    other = tiny_model()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    kw = dict(preprocess=PRE, methods=scale_worker.METHODS, metrics=scale_worker.METRICS,
              metric_options=scale_worker.METRIC_OPTIONS, images_per_batch=2, shard_images=2, resume=True,
              progress=False)
    with pytest.raises(DatasetError, match="weights differ"):
        explain_dataset(other, open_images(data), out, **kw)
    first = sorted(data.rglob("*.png"))[0]
    st = first.stat()
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the same list, one file replaced
    try:
        with pytest.raises(DatasetError, match="image files differ"):
            explain_dataset(tiny_model(), open_images(data), out, **kw)
    finally:
        os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert explain_dataset(tiny_model(), open_images(data), out, **kw).done_now == 0
