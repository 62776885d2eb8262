"""The two-pass tally driver: the statistics of a stream, a resume from a mid-pass checkpoint, a refused one."""
from __future__ import annotations

import pytest
import torch

from interpretorch.core.runningstats import IoUTally, TopQuantile, label_masks
from interpretorch.core.tally import Labels, checkpoint_path, load_checkpoint, two_pass_tally

G = torch.Generator().manual_seed(0)
ACTS = [torch.rand(3, 4, 2, 2, generator=G) for _ in range(4)]  # 4 batches of 3 rows, 4 units
PIXEL = [torch.randint(0, 3, (3, 1, 4, 4), generator=G) for _ in range(4)]  # labels 0..2 on 4 x 4 masks
CATS = torch.tensor([-1, 0, 0])


def _source(stop_after: int | None = None):
    def pass1(start):
        for b in range(start, 4):
            if stop_after is not None and b == stop_after:
                raise KeyboardInterrupt
            yield torch.arange(3 * b, 3 * b + 3), {"l": ACTS[b]}, {}

    def pass2(start, cache):
        for b in range(start, 4):
            labels = torch.full((3, 0), -1, dtype=torch.long)
            yield Labels(PIXEL[b], labels, torch.ones(3, 1, dtype=torch.long),
                         label_masks(PIXEL[b], labels, 3), None if cache is not None else {"l": ACTS[b]})
    return pass1, pass2


def _run(state=None, checkpoint=None, stop_after=None, cache_bytes=0):
    p1, p2 = _source(stop_after)
    return two_pass_tally(p1, p2, ["l"], batches=4, total=12, quantile=0.25, top_images=2, label_category=CATS,
                          num_categories=1, device=torch.device("cpu"), state=state, checkpoint=checkpoint,
                          checkpoint_every=1, cache_bytes=cache_bytes)


def test_the_driver_gives_the_statistics_of_the_whole_stream():
    quant = TopQuantile(4, 0.25, 48)
    quant.update(torch.cat(ACTS))
    tally = IoUTally(4, CATS, 1)
    for a, p in zip(ACTS, PIXEL):
        tally.update(a, quant.thresholds(), p, torch.full((3, 0), -1), torch.ones(3, 1, dtype=torch.long))
    for cache in (0, 1 << 20):
        out = _run(cache_bytes=cache)
        assert torch.equal(out.thresholds["l"], quant.thresholds())
        assert torch.equal(out.tallies["l"].intersect, tally.intersect)
        peaks = torch.cat(ACTS).amax(dim=(2, 3))
        assert torch.equal(out.tops["l"].indices, peaks.argsort(dim=0, descending=True)[:2].T)


def test_a_run_stopped_mid_pass_resumes_to_the_same_counts(tmp_path):
    ckpt = checkpoint_path(tmp_path / "c.pt")
    fp = {"what": 1}
    with pytest.raises(KeyboardInterrupt):
        _run(load_checkpoint(ckpt, fp, resume=True), ckpt, stop_after=2)
    state = load_checkpoint(ckpt, fp, resume=True)
    assert (state["pass"], state["done"]) == (1, 2)
    resumed = _run(state, ckpt)
    whole = _run()
    assert torch.equal(resumed.thresholds["l"], whole.thresholds["l"])
    assert torch.equal(resumed.tallies["l"].intersect, whole.tallies["l"].intersect)
    assert torch.equal(resumed.tallies["l"].activation, whole.tallies["l"].activation)
    with pytest.raises(ValueError, match="different run.*'what': \\(1, 2\\)"):
        load_checkpoint(ckpt, {"what": 2}, resume=True)
