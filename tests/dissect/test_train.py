"""ProbeCNN training: targets match the drawn labels, training is seeded, dissectable layers exist."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.dissect.probe import SCENES, SHAPES, draw_probe_image, make_probe
from interpretorch.dissect.train import PROBE_LAYERS, ProbeCNN, targets, train_probe_cnn
from interpretorch.models.layers import get_layer


def test_targets_follow_the_labels(tmp_path):
    root = make_probe(tmp_path / "p", n_images=8, size=32, seed=4, mask_size=32)
    ds = BrodenDataset(root)
    scene, shape = targets(ds, collate([ds[i] for i in range(8)]))
    names = {n: name for n, name in ((n, ds.info.label_names[n]) for n in ds.info.label_names)}
    for i in range(8):
        _, lab, sc = draw_probe_image(4, i, 32)
        assert list(SCENES)[int(scene[i])] == names[sc]
        areas = [(lab["object"] == next(n for n, nm in names.items() if nm == s)).sum() for s in SHAPES]
        assert SHAPES[int(shape[i])] == SHAPES[int(np.argmax(areas))]


def test_training_is_seeded(tmp_path):
    root = make_probe(tmp_path / "p", n_images=12, size=32, seed=0)
    state = torch.random.get_rng_state()
    a = train_probe_cnn(root, epochs=1, batch_size=6, width=4)
    b = train_probe_cnn(root, epochs=1, batch_size=6, width=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not a.training
    untrained = ProbeCNN(width=4)
    assert not torch.equal(a.conv1[0].weight, untrained.conv1[0].weight)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    for name in PROBE_LAYERS:
        get_layer(a, name)


def test_the_command_line_saves_the_weights_and_the_snapshots(tmp_path, capsys):
    from interpretorch.dissect.train import main, snapshot_name

    root = make_probe(tmp_path / "p", n_images=12, size=32, seed=0)
    # 12 images in batches of 64: one optimizer step an epoch, so 2 epochs end at step 2
    assert main(["--data", str(root), "--out", str(tmp_path / "w.pt"), "--epochs", "2", "--snapshots", "0,2"]) == 0
    assert "2 snapshots in" in capsys.readouterr().out
    snaps = tmp_path / "w_snapshots"
    assert sorted(p.name for p in snaps.iterdir()) == [snapshot_name(0), snapshot_name(2)]
    saved = torch.load(tmp_path / "w.pt", weights_only=True)
    last = torch.load(snaps / snapshot_name(2), weights_only=True)
    expect = train_probe_cnn(root, epochs=2).state_dict()
    assert all(torch.equal(saved[k], v) for k, v in expect.items())
    assert all(torch.equal(last[k], v) for k, v in saved.items())
    first = torch.load(snaps / snapshot_name(0), weights_only=True)
    assert not torch.equal(first["conv1.0.weight"], saved["conv1.0.weight"])
    with pytest.raises(ValueError, match="past the last step"):
        train_probe_cnn(root, epochs=1, snapshots=[5], snapshot_dir=tmp_path / "s2")
