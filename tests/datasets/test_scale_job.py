"""The dataset job: its per-image numbers equal evaluate() on the same images, they do not depend on the
batching, a run killed midway resumes to the uninterrupted result, Parquet and CSV agree, maps are saved, and
the loop hands every batch to the writer before reading the next one."""
from __future__ import annotations

import gc
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

import scale_worker
from scale_data import PRE, tiny_model, write_dataset
from interpretorch.datasets import DatasetError, explain_dataset, load_maps, open_images, read_rows
from interpretorch.datasets import job as job_module
from interpretorch.datasets.writer import shard_files
from interpretorch.metrics import evaluate
from interpretorch.run import run

WORKER = Path(__file__).with_name("scale_worker.py")


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("scale"), 7)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict:
    """The uninterrupted run, in this process."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref") / "out"
    scale_worker.run(str(data), str(out))
    return read_rows(out)


def _assert_same_rows(a: dict, b: dict, rtol: float = 1e-4) -> None:
    """Equal rows; floats to float32 noise of different batch sizes (bit-equal with rtol=0)."""
    assert a["image"] == b["image"] and a["method"] == b["method"] and a["path"] == b["path"]
    for col in a:
        if col in ("path", "method", "error", "image", "label", "target", "pred"):
            assert a[col] == b[col], col
        else:
            np.testing.assert_allclose(np.array(a[col], dtype=float), np.array(b[col], dtype=float), rtol=rtol,
                                       atol=1e-5 if rtol else 0, err_msg=col)


@pytest.mark.numerics
def test_rows_equal_evaluate_on_the_same_images(data, reference):
    ds = open_images(data)
    from interpretorch.models.preprocess import load_image

    x = PRE.normalize(PRE.display([load_image(data / r.path) for r in ds.records]))
    model = tiny_model()
    res = run(model, x, scale_worker.METHODS)
    ev = evaluate(model, x, res.explanations, metrics=["deletion", "average_drop", "win"],
                  deletion={"step": 0.25})
    assert len(reference["image"]) == 7 * 2 and reference["image"] == sorted(reference["image"])
    for k, (i, m) in enumerate(zip(reference["image"], reference["method"])):
        assert reference["path"][k] == ds.records[i].path
        assert reference["label"][k] == ds.records[i].label
        assert reference["target"][k] == int(res.explanations[m].target[i])
        for metric in ("deletion", "average_drop", "win"):
            assert math.isclose(reference[metric][k], ev[m][metric]["per_image"][i], rel_tol=1e-4, abs_tol=1e-5)
        assert reference["infidelity"][k] >= 0


@pytest.mark.numerics
def test_results_do_not_depend_on_batching(data, reference, tmp_path):
    scale_worker.run(str(data), str(tmp_path / "b3"), per_batch=3)
    _assert_same_rows(read_rows(tmp_path / "b3"), reference)


def test_killed_run_resumes_to_the_uninterrupted_result(data, reference, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(data), str(out)]
    proc = subprocess.run(cmd + ["fresh", "2"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=WORKER.parent)
    assert proc.returncode == -9, proc.stderr[-2000:]  # SIGKILL after the second batch
    done = read_rows(out)
    assert 0 < len(set(done["image"])) < 7 and not (out / "summary.json").exists()
    (out / "shards" / "rows-r000-000099.parquet.tmp").write_bytes(b"half a file")  # a crash mid-write
    with pytest.raises(DatasetError, match="--resume"):
        scale_worker.run(str(data), str(out))  # refuses to mix a fresh run into it
    res = scale_worker.run(str(data), str(out), resume=True)
    assert res.done_now == 7 - len(set(done["image"]))
    _assert_same_rows(read_rows(out), reference)
    assert not list((out / "shards").glob("*.tmp"))
    assert (out / "summary.json").exists() and len(res.manifest["sessions"]) == 1


def test_interrupted_run_keeps_its_finished_batches(data, reference, tmp_path):
    def interrupt(batches: int, written: int) -> None:
        if batches == 2:
            raise KeyboardInterrupt  # Ctrl-C after two batches, both still in the writer's buffer

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        scale_worker.run(str(data), str(out), shard_images=100, on_batch=interrupt)
    assert len(set(read_rows(out)["image"])) == 4
    assert scale_worker.run(str(data), str(out), resume=True).done_now == 3
    _assert_same_rows(read_rows(out), reference)


def test_resume_with_other_settings_is_refused(data, tmp_path):
    scale_worker.run(str(data), str(tmp_path / "o"))
    with pytest.raises(DatasetError, match="other settings.*metrics"):
        explain_dataset(tiny_model(), open_images(data), tmp_path / "o", preprocess=PRE,
                        methods=scale_worker.METHODS, metrics=["deletion"], resume=True, progress=False)


def test_csv_without_pyarrow_equals_parquet(data, reference, tmp_path, monkeypatch):
    monkeypatch.setattr(job_module, "have_pyarrow", lambda: False)
    res = scale_worker.run(str(data), str(tmp_path / "csv"))
    assert res.manifest["format"] == "csv"
    assert [p.suffix for _, _, p in shard_files(tmp_path / "csv")] == [".csv"] * 4
    assert (tmp_path / "csv" / "per_image.csv").exists()
    _assert_same_rows(read_rows(tmp_path / "csv"), reference, rtol=0)  # CSV keeps every digit


def test_saved_maps_and_batches_written_before_the_next(data, tmp_path, monkeypatch):
    alive: list[weakref.ref] = []
    checks: list[tuple[int, int, int]] = []

    def tracking_run(*args, **kwargs):
        res = run(*args, **kwargs)
        alive.extend(weakref.ref(e.maps) for e in res.explanations.values())
        return res

    def on_batch(batches: int, written: int) -> None:
        gc.collect()
        checks.append((batches, len(shard_files(tmp_path / "m", "rows")), sum(r() is not None for r in alive)))

    monkeypatch.setattr(job_module, "run_methods", tracking_run)
    model = tiny_model()
    explain_dataset(model, open_images(data), tmp_path / "m", preprocess=PRE, methods=["gradcam"],
                    evaluate_maps=False, save_maps=True, images_per_batch=2, shard_images=2, on_batch=on_batch,
                    progress=False)
    # after each full batch its shard is on disk (the last, half-full one at the end), and no batch's maps
    # are still held once the batch is done
    assert [(b, n) for b, n, _ in checks] == [(1, 1), (2, 2), (3, 3), (4, 3)]
    assert len(shard_files(tmp_path / "m", "maps")) == 4
    assert all(n_alive == 0 for *_, n_alive in checks)
    ds = open_images(data)
    from interpretorch.models.preprocess import load_image

    x = PRE.normalize(PRE.display([load_image(data / r.path) for r in ds.records]))
    ref = run(model, x, ["gradcam"]).explanations["gradcam"].map2d()
    saved = load_maps(tmp_path / "m", "gradcam")
    assert sorted(saved) == list(range(7))
    for i, m in saved.items():
        np.testing.assert_allclose(m, ref[i].numpy(), rtol=2e-3, atol=1e-3 * float(ref[i].abs().max()))


def test_label_target_and_unreadable_image(tmp_path):
    data = write_dataset(tmp_path, 3)
    bad = data / "disk" / "broken.png"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"not a png")
    res = explain_dataset(tiny_model(), open_images(data), tmp_path / "o", preprocess=PRE, methods=["gradcam"],
                          metrics=["average_drop"], target="label", progress=False, bootstrap_resamples=100)
    assert [f["path"] for f in res.failed] == ["disk/broken.png"] and "broken.png" in res.failed[0]["error"]
    rows = read_rows(tmp_path / "o")
    good = [k for k, e in enumerate(rows["error"]) if e is None]
    assert len(good) == 3 and all(rows["target"][k] == rows["label"][k] for k in good)
    assert res.summary["images"] == 4 and res.summary["table"]["gradcam"]["average_drop"]["n"] == 3
    with pytest.raises(DatasetError, match="label for every image"):
        explain_dataset(tiny_model(), open_images(write_dataset(tmp_path / "flat", 2, layout="folder")),
                        tmp_path / "o2", preprocess=PRE, methods=["gradcam"], target="label", progress=False)
