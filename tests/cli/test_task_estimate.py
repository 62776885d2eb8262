"""``explain --task detection|segmentation`` explains the targets of each image together (``explain_targets``: one
forward pass and one backward pass per target for the CAMs and gradients, K rows of the image for the others),
and the estimate it prints counts exactly the rows the run advances on the progress sink."""
from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

import interpretorch.cli.estimate as estimate_module
from interpretorch.cli import main
from interpretorch.core import track
from interpretorch.data.synthetic import make_scene_set
from interpretorch.models import load_model
from interpretorch.run import run, task_rows


@pytest.fixture(scope="module")
def scene_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene_files")
    scenes = make_scene_set(2, seed=4)
    paths = []
    for i in range(len(scenes)):
        p = root / f"scene{i}.png"
        Image.fromarray((scenes.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def counted(monkeypatch):
    """The rows the run advances on the progress sink the CLI binds (its row bar)."""
    seen = {}

    @contextmanager
    def bar(total, desc="model rows"):
        with track(total) as progress:
            yield
        seen["total"], seen["done"] = total, progress.done
    monkeypatch.setattr(estimate_module, "row_bar", bar)
    return seen


@pytest.mark.parametrize("model, task, methods, per_image", [
    # CAM pass (1 + K) + gradient (1 + K) + occlusion on K copies: 8 x 8 windows at stride 8 on 64 px -> 64 + 1
    ("tiny_detector", "detection", "gradcam,gradcampp,gradient,occlusion", lambda k: 2 * (1 + k) + k * 65),
    ("tiny_segmenter", "segmentation", "gradcam,gradient_x_input", lambda k: 2 * (1 + k)),
])
def test_printed_rows_equal_the_rows_the_run_advances(tmp_path, scene_files, counted, capsys, model, task, methods,
                                                      per_image):
    args = ["explain", "--model", model, "--task", task, *scene_files, "--methods", methods, "--out",
            str(tmp_path / "out"), "--option", "occlusion.window=8", "--option", "occlusion.stride=8"]
    if "occlusion" not in methods:
        args = args[:-4]
    assert main(args) == 0
    err = capsys.readouterr().err
    printed = int(re.search(r"about ([\d,]+) model rows", err).group(1).replace(",", ""))
    loaded = load_model(model)
    x = torch.stack([loaded.preprocess.normalize(loaded.preprocess.display(
        [np.asarray(Image.open(p).convert("RGB"))]))[0] for p in scene_files])
    rows = task_rows(loaded.model, x, task)
    ks = [rows.images.count(i) for i in range(len(scene_files))]
    assert printed == counted["total"] == counted["done"] == sum(per_image(k) for k in ks if k) > 0


@pytest.mark.numerics
def test_rows_explained_by_image_equal_the_rows_explained_one_by_one(scene_files):
    loaded = load_model("tiny_detector")
    x = torch.stack([loaded.preprocess.normalize(loaded.preprocess.display(
        [np.asarray(Image.open(p).convert("RGB"))]))[0] for p in scene_files])
    rows = task_rows(loaded.model, x, "detection")
    assert len(rows.targets) > len(scene_files)  # several detections in an image
    methods = ["gradcam", "gradient", "occlusion"]
    options = {"occlusion": {"window": 16, "stride": 16}}
    grouped = run(loaded.model, rows.inputs, methods, rows.targets, loaded.cam_layer, options=options,
                  row_images=rows.images)
    plain = run(loaded.model, rows.inputs, methods, rows.targets, loaded.cam_layer, options=options)
    for m in methods:
        a, b = grouped.explanations[m], plain.explanations[m]
        torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.scores, b.scores, rtol=1e-4, atol=1e-5)
        assert a.extras["targets"] == b.extras["targets"]


@pytest.mark.parametrize("task, model, evaluate", [("detection", "tiny_detector", True),
                                                   ("segmentation", "tiny_segmenter", False)])
def test_task_dataset_estimate_equals_the_rows_of_the_job(tmp_path, task, model, evaluate):
    """With at most ``runner.SAMPLE`` images every image's targets are counted, so the estimate is exact."""
    from interpretorch.data.synthetic import save_scene_set
    from interpretorch.datasets.runner import DatasetJob, run_dataset_job

    save_scene_set(make_scene_set(3, seed=8), tmp_path / "scenes")
    job = DatasetJob(data=tmp_path / "scenes", out=tmp_path / "o", load_model=lambda d: load_model(model, device=d),
                     methods=["gradcam", "gradient", "occlusion"], evaluate=evaluate, task=task,
                     metrics=["deletion", "pointing_game"] if evaluate else None,
                     options={"occlusion": {"window": 16, "stride": 16}},
                     metric_options={"deletion": {"step": 0.25}})
    told = []
    with track() as counted:
        result = run_dataset_job(job, on_estimate=told.append)
    assert result.page is not None and len(told) == 1
    assert told[0].rows == counted.done > 0 and told[0].unknown == ()
