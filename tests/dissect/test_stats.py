"""Streaming statistics: exact thresholds, the sketch's error bound, exact merges and state round trips."""
from __future__ import annotations

import math

import pytest
import torch

from interpretorch.dissect.stats import IoUTally, TopImages, TopQuantile, label_masks


def _reference(x: torch.Tensor, q: float) -> torch.Tensor:
    v = x.transpose(0, 1).reshape(x.shape[1], -1)
    rank = math.floor(q * v.shape[1]) + 1
    return v.sort(dim=1, descending=True).values[:, rank - 1]


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    return torch.randn(12, 5, 6, 6, generator=g) * torch.tensor([1, 10, 0.01, 3, 100.0]).view(1, 5, 1, 1) + 0.5


@pytest.mark.parametrize("q", [0.005, 0.05, 0.3])
def test_exact_threshold(acts, q):
    est = TopQuantile(5, q, capacity=12 * 36)
    assert est.exact
    for i in range(0, 12, 5):
        est.update(acts[i:i + 5])
    t = est.thresholds()
    assert torch.equal(t, _reference(acts, q))
    v = acts.transpose(0, 1).reshape(5, -1)
    assert ((v > t[:, None]).sum(1) <= math.floor(q * v.shape[1])).all()


@pytest.mark.parametrize("q", [0.01, 0.2])
def test_sketch_within_its_bound(acts, q):
    est = TopQuantile(5, q, capacity=12 * 36, max_exact=10)
    assert not est.exact
    for i in range(12):
        est.update(acts[i:i + 1])
    ref = _reference(acts, q)
    assert ((est.thresholds() - ref).abs() <= 2 ** -7 * ref.abs()).all()


@pytest.mark.parametrize("max_exact", [10, 1 << 20])
def test_merge_and_state_equal_one_stream(acts, max_exact):
    whole = TopQuantile(5, 0.05, 432, max_exact=max_exact)
    whole.update(acts)
    a, b = TopQuantile(5, 0.05, 432, max_exact=max_exact), TopQuantile(5, 0.05, 432, max_exact=max_exact)
    a.update(acts[::2])
    b.update(acts[1::2])
    restored = TopQuantile(5, 0.05, 432, max_exact=max_exact)
    restored.load_state_dict(a.state_dict())
    restored.merge(b)
    assert torch.equal(restored.thresholds(), whole.thresholds())
    with pytest.raises(ValueError, match="quantile"):
        TopQuantile(5, 0.1, 432, max_exact=max_exact).load_state_dict(a.state_dict())


def test_top_images_ties_and_merge():
    acts = torch.tensor([[1.0, 5.0], [3.0, 5.0], [3.0, 0.0], [2.0, 5.0]]).view(4, 2, 1, 1)
    whole = TopImages(2, 2)
    whole.update(acts, torch.arange(4))
    assert whole.indices.tolist() == [[1, 2], [0, 1]]  # ties go to the smaller index
    a, b = TopImages(2, 2), TopImages(2, 2)
    b.update(acts[2:], torch.tensor([2, 3]))
    a.update(acts[:2], torch.tensor([0, 1]))
    b.merge(a)
    assert torch.equal(b.indices, whole.indices) and torch.equal(b.values, whole.values)


def test_label_masks_union_and_image_labels():
    pixel = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    pixel[0, 0, 0] = 3          # layer 0: label 3 on the top row
    pixel[0, 1, :, 0] = 3       # layer 1: label 3 on the left column (overlaps at (0, 0))
    pixel[0, 1, 1, 1] = 1
    present, y = label_masks(pixel, torch.tensor([[5, -1]]), num_labels=6)
    assert present.tolist() == [1, 3, 5]
    assert y[0, :, 1].tolist() == [True, True, True, False]  # union: (0,0) counted once
    assert y[0, :, 0].tolist() == [False, False, False, True]
    assert y[0, :, 2].all()  # image-level covers the whole image
    with pytest.raises(ValueError, match="outside the 6 labels"):
        label_masks(pixel + 6, torch.tensor([[-1]]), num_labels=6)


def test_tally_upsamples_and_merges():
    # a 1x1 activation map covers the whole 2x2 mask after upsampling
    cat = torch.tensor([-1, 0, 0])
    pixel = torch.tensor([[[[1, 1], [2, 0]]]])
    t = IoUTally(2, cat, 1)
    t.update(torch.tensor([[[[1.0]], [[-1.0]]]]), torch.zeros(2), pixel, torch.full((1, 1), -1),
             torch.ones(1, 1, dtype=torch.bool))
    assert t.intersect.tolist() == [[0, 2, 1], [0, 0, 0]] and t.activation.tolist() == [[4], [0]]
    assert t.truth.tolist() == [0, 2, 1]
    assert torch.allclose(t.iou()[0], torch.tensor([0, 2 / 4, 1 / 4], dtype=torch.double))
    u = IoUTally(2, cat, 1)
    u.load_state_dict(t.state_dict())
    u.merge(t)
    assert u.intersect.tolist() == [[0, 4, 2], [0, 0, 0]] and u.images == 2
