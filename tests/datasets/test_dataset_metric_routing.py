"""A dataset job computes every registered metric it can per image: metrics that re-explain or draw random
numbers run image by image (the method that made each map, a seed of the image's own), so their figures do
not depend on batching; metrics whose values depend on the other images evaluated with them are refused when
named and left out of a family."""
from __future__ import annotations

import math

import pytest
import torch

from scale_data import PRE, tiny_model, write_dataset
from interpretorch.attribution import reexplainers
from interpretorch.core import seed_for
from interpretorch.datasets import DatasetError, explain_dataset, open_images, read_rows
from interpretorch.datasets.job import per_image_metric, resolve_dataset_metrics
from interpretorch.metrics import evaluate
from interpretorch.models.preprocess import load_image
from interpretorch.run import run

METRICS = ["average_sensitivity", "continuity"]
# continuity: an odd step count (an even one includes the zero shift, whose ratio divides rounding by 1e-9)
OPTIONS = {"average_sensitivity": {"n_samples": 2}, "continuity": {"nr_steps": 3}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("routing"), 4)


def _job(data, out, per_batch):
    torch.manual_seed(0)
    explain_dataset(tiny_model(), open_images(data), out, preprocess=PRE, methods=["gradient"], metrics=METRICS,
                    metric_options=OPTIONS, images_per_batch=per_batch, bootstrap_resamples=50, seed=3)
    return read_rows(out)


@pytest.mark.numerics
def test_reexplaining_metrics_run_per_image_and_do_not_depend_on_batching(data, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = _job(data, tmp_path / "a", 2), _job(data, tmp_path / "b", 3)
        assert a["image"] == b["image"] == [0, 1, 2, 3]
        for m in METRICS:
            assert all(v is not None and math.isfinite(v) for v in a[m]), m
            for u, v in zip(a[m], b[m]):
                assert math.isclose(u, v, rel_tol=1e-4, abs_tol=1e-6), m
        # image 2 alone, evaluated with its own seed and its method: the job's row
        ds = open_images(data)
        x = PRE.normalize(PRE.display([load_image(data / ds.records[2].path)]))
        model = tiny_model()
        res = run(model, x, ["gradient"])
        ev = evaluate(model, x, res.explanations, metrics=METRICS, explain_fn=reexplainers(res.explanations),
                      average_sensitivity={"n_samples": 2, "seed": seed_for(3, 2)}, continuity={"nr_steps": 3})
        for m in METRICS:
            assert math.isclose(a[m][2], ev["gradient"][m]["per_image"][0], rel_tol=1e-4, abs_tol=1e-6), m
    finally:
        torch.set_num_threads(before)


def test_metrics_relative_to_the_set_are_refused_when_named_and_left_out_of_families():
    assert per_image_metric("average_sensitivity") and per_image_metric("road") and not per_image_metric("deletion")
    for name in ("sensitivity_n", "sufficiency", "consistency"):
        with pytest.raises(DatasetError, match=f"{name}: its values depend on which images"):
            resolve_dataset_metrics([name], False)
    faithfulness = resolve_dataset_metrics("faithfulness", False)
    assert "deletion" in faithfulness and "sensitivity_n" not in faithfulness and "sufficiency" not in faithfulness
    assert "consistency" not in resolve_dataset_metrics("robustness", False)
