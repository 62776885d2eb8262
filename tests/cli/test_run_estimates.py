"""Estimates before long runs (issue 32): the rows a sanity check, a TCAV run and a dataset job announce are the
rows their batching loops count (exactly, where the formulas are exact), and the time is the measured cost of
those rows on the same model in the same process (within 2x)."""
from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.core import track
from interpretorch.models import TinyCNN, load_model
from interpretorch.sanity import estimate_model_randomization, model_randomization

SANITY_METHODS = ["gradient", "gradcam", "integrated_gradients", "rise"]
SANITY_OPTIONS = {"integrated_gradients": {"steps": 4}, "rise": {"n_masks": 6}}


def _model_and_inputs(n=2, size=16):
    torch.manual_seed(0)
    return TinyCNN(num_classes=5).eval(), torch.randn(n, 3, size, size)


@pytest.mark.parametrize("kw", [{"max_steps": 2}, {"mode": "independent"}])
def test_sanity_estimate_equals_the_rows_the_test_runs(kw):
    model, x = _model_and_inputs()
    est = estimate_model_randomization(model, x, SANITY_METHODS, granularity="modules", options=SANITY_OPTIONS, **kw)
    with track() as counted:
        result = model_randomization(model, x, SANITY_METHODS, granularity="modules", options=SANITY_OPTIONS,
                                     keep_maps=0, **kw)
    assert est.rows == counted.done > 0 and est.unknown == ()
    per_run = 2 * (1 + 1 + (4 + 2) + (6 + 1))  # gradient, gradcam, IG (steps + 2), RISE (masks + clean) per image
    assert est.rows == per_run * (1 + len(result.steps))


def _tcav_sets():
    g = torch.Generator().manual_seed(0)
    concepts = {"stripes": torch.randn(6, 3, 16, 16, generator=g)}
    randoms = {f"random_{i}": torch.randn(5, 3, 16, 16, generator=g) for i in range(3)}
    return concepts, randoms


def test_tcav_estimate_equals_the_rows_of_the_run_and_its_concept_maps_and_knows_the_cache(tmp_path):
    from interpretorch.concepts.cache import ActivationCache
    from interpretorch.concepts.estimate import estimate_tcav
    from interpretorch.concepts.maps import concept_maps
    from interpretorch.concepts.tcav import run_tcav

    model, x = _model_and_inputs(4)
    concepts, randoms = _tcav_sets()
    for expected_sets in (6 + 3 * 5, 0):  # the second time every set's activations come from the cache
        cache = ActivationCache(tmp_path / "cache")
        est = estimate_tcav(model, x, concepts, randoms, ["features.3"], cache=cache, concept_maps=1)
        with track() as counted:
            result = run_tcav(model, x, concepts, randoms, ["features.3"], 1, cache=cache)
            concept_maps(model, x, result.cavs.vectors["features.3"][:3].mean(0), "features.3")
        assert est.rows == counted.done == expected_sets + 4 + 4  # sets, class gradients, one concept map


def _dataset(tmp_path, n=3):
    folder = tmp_path / "data"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


OPTIONS = {"rise": {"n_masks": 10}, "integrated_gradients": {"steps": 4}, "smoothgrad": {"n_samples": 3}}


@pytest.mark.parametrize("methods,evaluate,metrics,save_maps", [
    (["gradient"], False, None, False),
    (["gradcam", "integrated_gradients", "rise"], True, ["deletion", "average_drop", "road", "infidelity"], False),
    (["occlusion", "smoothgrad"], True, ["insertion", "sparseness"], True),
])
def test_dataset_estimate_equals_the_rows_of_the_job(tmp_path, methods, evaluate, metrics, save_maps):
    from interpretorch.datasets.runner import DatasetJob, run_dataset_job

    data = _dataset(tmp_path)
    job = DatasetJob(data=data, out=tmp_path / "o", load_model=lambda d: load_model("tiny_cnn", device=d),
                     methods=methods, evaluate=evaluate, metrics=metrics, save_maps=save_maps,
                     options={m: o for m, o in OPTIONS.items() if m in methods},
                     metric_options={"deletion": {"step": 0.2}, "insertion": {"step": 0.2}})
    told = []
    with track() as counted:
        result = run_dataset_job(job, on_estimate=told.append)
    assert result.page is not None and len(told) == 1
    assert told[0].rows == counted.done > 0 and told[0].unknown == ()


def test_a_metric_whose_rows_depend_on_the_image_is_named_not_counted(tmp_path):
    from interpretorch.datasets.runner import DatasetJob, estimate_dataset_job

    job = DatasetJob(data=_dataset(tmp_path), out=tmp_path / "o", evaluate=True, metrics=["irof", "deletion"],
                     load_model=lambda d: load_model("tiny_cnn", device=d), methods=["gradient"])
    assert estimate_dataset_job(job).unknown == ("irof",)


def test_sanity_estimate_time_is_within_2x_of_a_timed_run():
    # Loose by design: timings on a shared machine jitter, so the estimate gets three tries, each against a run
    # timed right after it in this process, to land within 2x; the rows themselves are compared exactly above.
    model, x = _model_and_inputs(4, 32)
    kw = dict(granularity="modules", options={"integrated_gradients": {"steps": 4}}, max_steps=3)
    methods = ["gradient", "gradcam", "integrated_gradients"]
    model_randomization(model, x, ["gradient"], granularity="modules", max_steps=1)  # warm-up
    ratios = []
    for _ in range(3):
        est = estimate_model_randomization(model, x, methods, **kw)
        t0 = time.perf_counter()
        model_randomization(model, x, methods, **kw)
        ratios.append(est.seconds / (time.perf_counter() - t0))
        if 0.5 <= ratios[-1] <= 2.0:
            break
    assert 0.5 <= ratios[-1] <= 2.0, ratios


def _about(err: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r"about ([\d,]+) model rows", err)]


def test_the_commands_print_their_estimate_first(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(img)
    common = ["--model", "tiny_cnn", "--size", "32"]
    assert main(["sanity", str(img), *common, "--methods", "gradient", "--granularity", "modules", "--max-steps", "2",
                 "--out", str(tmp_path / "s")]) == 0
    assert _about(capsys.readouterr().err) == [1 * (1 + 2)]  # one gradient row, on the model and two steps
    assert main(["explain", str(img), *common, "--methods", "gradient,gradcam", "--sanity", "--sanity-steps", "2",
                 "--out", str(tmp_path / "e")]) == 0
    assert _about(capsys.readouterr().err) == [2, 2 * (1 + 2)]  # the run, then its sanity check
    assert main(["explain", "--data", str(_dataset(tmp_path)), *common, "--methods", "gradient",
                 "--out", str(tmp_path / "d")]) == 0
    assert _about(capsys.readouterr().err) == [3]
    data = _dataset(tmp_path / "t", 6)
    assert main(["tcav", "--images", str(img), "--target", "1", "--concepts", "stripes", "--random", str(data),
                 "--runs", "3", "--set-size", "4", "--layers", "features.3", *common,
                 "--out", str(tmp_path / "t")]) == 0
    assert _about(capsys.readouterr().err) == [4 + 3 * 4 + 1 + 1]  # concept, random sets, gradients, concept map
