"""dissect(): hand-counted tallies, the unit-on-a-mask detector, resume, and the model-unchanged contract."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from dissect_handmade import Channels, write_handmade
from interpretorch.dissect.broden import BrodenDataset
from interpretorch.dissect.probe import make_probe
from interpretorch.dissect.run import dissect, write_summary, write_tally
from interpretorch.models import TinyCNN

ZERO = (0.0, 0.0, 0.0)
ONE = (1.0, 1.0, 1.0)


@pytest.fixture
def handmade(tmp_path):
    return BrodenDataset(write_handmade(tmp_path / "hand"), mean=ZERO, std=ONE)


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    return make_probe(tmp_path_factory.mktemp("probe"), n_images=24, size=64, seed=3)


def test_hand_counts(handmade):
    # 32 values per unit, q = 0.25: threshold = 9th largest = 0 (no unit is non-zero on more than 8 pixels),
    # so each unit's region is exactly where its channel is 255 (see dissect_handmade.py).
    res = dissect(Channels(), handmade, ["feat"], quantile=0.25, batch_size=1)
    ld = res.layers["feat"]
    t = ld.tally
    assert torch.equal(ld.thresholds, torch.zeros(3))
    # labels 1 red, 2 green, 3 beach, 4 forest, 5 cup; truth: red 4 + 2, green 8, scenes whole images, cup col 0
    assert t.truth.tolist() == [0, 6, 8, 16, 16, 4]
    # region pixels per category (color, object, scene); object only counts image B (the only one with objects)
    assert t.activation.tolist() == [[5, 1, 5], [8, 4, 8], [2, 2, 2]]
    assert t.intersect.tolist() == [[0, 5, 0, 4, 1, 0],   # R: top-left block + (3,3)
                                    [0, 2, 0, 4, 4, 4],   # G: row 0 of A, column 0 of B
                                    [0, 0, 0, 0, 2, 1]]   # B: (0,0), (1,1) of B
    expect = torch.tensor([[0, 5 / 6, 0, 4 / 17, 1 / 20, 0],
                           [0, 2 / 12, 0, 4 / 20, 4 / 20, 4 / 4],
                           [0, 0, 0, 0, 2 / 16, 1 / 5]], dtype=torch.double)
    assert torch.allclose(ld.iou, expect)
    assert t.images == 2


def test_unit_on_a_mask_is_its_detector(handmade, tmp_path):
    # Unit 1 (G) fires exactly on the cup mask in the only image with objects: IoU 1, reported as cup detector.
    res = dissect(Channels(), handmade, "feat", quantile=0.25, batch_size=2, iou_threshold=0.3)
    ld = res.layers["feat"]
    det = ld.detectors()
    assert det[0] == {"unit": 1, "label": "cup", "category": "object", "iou": 1.0}
    assert [d["unit"] for d in det] == [1, 0]  # unit 0: red at 5/6; unit 2's best (1/5) is below 0.3
    rows = {r["unit"]: r for r in ld.unit_rows()}
    assert rows[0]["label"] == "red" and rows[0]["score"] == pytest.approx(5 / 6)
    assert rows[1]["object-intersect"] == 4 and rows[1]["object-truth"] == 4 and rows[1]["object-activation"] == 4
    write_tally(ld, tmp_path / "tally.csv")
    with open(tmp_path / "tally.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:9] == ["unit", "category", "label", "score", "color-label", "color-truth",
                                  "color-activation", "color-intersect", "color-iou"]
    assert [r["unit"] for r in table] == ["1", "0", "2"]  # best score first, units from 0
    write_summary(res, tmp_path / "s.json")
    summary = json.loads((tmp_path / "s.json").read_text())["layers"]["feat"]
    assert summary["detectors_per_category"] == {"color": 1, "object": 1, "scene": 0}
    assert summary["unique_concepts"] == 2


@pytest.mark.numerics
def test_batch_size_does_not_change_counts(handmade):
    a = dissect(Channels(), handmade, "feat", quantile=0.25, batch_size=1).layers["feat"].tally
    b = dissect(Channels(), handmade, "feat", quantile=0.25, batch_size=2).layers["feat"].tally
    assert torch.equal(a.intersect, b.intersect) and torch.equal(a.activation, b.activation)


class Stop(Exception):
    pass


@pytest.mark.parametrize("stop_pass", [1, 2])
def test_resume_equals_uninterrupted(probe_dir, tmp_path, stop_pass, snapshot):
    model = TinyCNN(num_classes=3, width=4).eval()
    snap = snapshot(model)
    layers = ["features.2", "features.8"]
    full = dissect(model, probe_dir, layers, quantile=0.02, batch_size=4)
    ckpt = tmp_path / "run.ckpt"

    def stopper(p, done):
        if p == stop_pass and done == 3:
            raise Stop

    with pytest.raises(Stop):
        dissect(model, probe_dir, layers, quantile=0.02, batch_size=4, checkpoint=ckpt, checkpoint_every=2,
                on_batch=stopper)
    seen = []
    resumed = dissect(model, probe_dir, layers, quantile=0.02, batch_size=4, checkpoint=ckpt, resume=True,
                      checkpoint_every=2, on_batch=lambda p, d: seen.append((p, d)))
    # the interrupted run checkpointed after batch 2 of pass stop_pass; the resumed run starts at batch 3
    assert seen[0] == (stop_pass, 3)
    for name in layers:
        a, b = full.layers[name], resumed.layers[name]
        assert torch.equal(a.thresholds, b.thresholds)
        assert torch.equal(a.tally.intersect, b.tally.intersect)
        assert torch.equal(a.tally.activation, b.tally.activation)
        assert torch.equal(a.tally.truth, b.tally.truth)
        assert torch.equal(a.top_indices, b.top_indices)
    snap.assert_unchanged()
    with pytest.raises(ValueError, match="different run"):
        dissect(model, probe_dir, layers, quantile=0.05, batch_size=4, checkpoint=ckpt, resume=True)


def test_bad_inputs(probe_dir):
    model = TinyCNN(num_classes=3, width=4).eval()
    with pytest.raises(KeyError, match="no layer"):
        dissect(model, probe_dir, ["features.99"])
    with pytest.raises(ValueError, match="feature maps"):
        dissect(model, probe_dir, ["fc"])
    with pytest.raises(ValueError, match="quantile"):
        dissect(model, probe_dir, ["features.2"], quantile=0.0)

    class NaNLayer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.feat = torch.nn.Identity()

        def forward(self, x):
            return self.feat(x * float("nan"))

    with pytest.raises(ValueError, match="NaN"):
        dissect(NaNLayer(), probe_dir, ["feat"])


def test_second_pass_from_cache_equals_forward_again_with_workers(probe_dir):
    model = TinyCNN(num_classes=3, width=4).eval()
    layers = ["features.2", "features.5"]
    a = dissect(model, probe_dir, layers, quantile=0.02, batch_size=5)
    b = dissect(model, probe_dir, layers, quantile=0.02, batch_size=5, cache_bytes=0, workers=1)
    for name in layers:
        assert torch.equal(a.layers[name].tally.intersect, b.layers[name].tally.intersect)
        assert torch.equal(a.layers[name].tally.activation, b.layers[name].tally.activation)
