"""Progress inside each method: the shared chunked loop counts rows done, the outermost loop only."""
from __future__ import annotations

import pytest
import torch

from interpretorch.attribution.registry import get_method
from interpretorch.core import chunks, track
from interpretorch.core.progress import advance, current


def test_chunks_count_rows_on_the_bound_sink_and_nothing_without_one():
    seen = []
    with track(total=10, on_advance=lambda done, total: seen.append((done, total))) as p:
        for _ in chunks(10, 4):
            pass
        assert current() is p
    assert p.done == 10 and p.fraction == 1.0 and seen == [(4, 10), (8, 10), (10, 10)]
    assert current() is None
    assert [s.stop for s in chunks(5, 2)] == [2, 4, 5]  # no sink bound: plain slices


def test_nested_loops_count_each_row_once():
    with track() as p:
        for _ in chunks(6, 3):
            for _ in chunks(3, 1):
                advance(99)  # inside a counted loop: ignored
        for _ in chunks(2, None):
            pass
    assert p.done == 8


def test_a_loop_left_early_counts_only_the_finished_chunks():
    with track() as p:
        for sl in chunks(10, 4):
            if sl.start == 4:
                break
    assert p.done == 4


def test_bad_total_is_named():
    with pytest.raises(ValueError, match="total"):
        with track(total=-1):
            pass


@pytest.mark.parametrize("name, options", [
    ("scorecam", {}), ("integrated_gradients", {"steps": 5}), ("smoothgrad", {"n_samples": 6}),
    ("occlusion", {"window": 16, "stride": 8}), ("rise", {"n_masks": 12}), ("lime", {"n_samples": 10}),
    ("sscam", {"n_samples": 2}), ("sess", {})])
def test_counted_rows_are_the_rows_the_model_saw(tiny, images, name, options):
    spec = get_method(name)
    seen = [0]
    handle = tiny.register_forward_pre_hook(lambda mod, a: seen.__setitem__(0, seen[0] + a[0].shape[0]))
    try:
        with track() as p:
            spec(tiny, images[:2], "top1", batch_size=4, **options)
    finally:
        handle.remove()
    if name == "lime":  # identical coalition rows run once; the skipped ones still count as done (nominal rows)
        assert p.done == 2 + 2 * options["n_samples"] and 2 < seen[0] <= p.done
        return
    # Score-CAM and SS-CAM also make a few single unchunked calls (the clean and baseline scores)
    assert seen[0] - 4 <= p.done <= seen[0] and p.done > 2
