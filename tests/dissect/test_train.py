"""ProbeCNN training: targets match the drawn labels, training is seeded, dissectable layers exist."""
from __future__ import annotations

import numpy as np
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
