"""The shipped concept CNN: its file is checked at load, and the seeded script retrains a model as good."""
from __future__ import annotations

import hashlib

import pytest
import torch

from interpretorch.concepts.toy import (WEIGHTS_SHA256, ConceptCNN, ToyConfig, _packaged_weights, load_concept_cnn,
                                        main)


def test_shipped_weights_load_with_their_sha256_and_config():
    raw = _packaged_weights().read_bytes()
    assert hashlib.sha256(raw).hexdigest() == WEIGHTS_SHA256
    model, meta = load_concept_cnn()
    assert isinstance(model, ConceptCNN) and not model.training
    assert meta["config"] == ToyConfig()  # `python -m interpretorch.concepts.toy` with no options made them
    assert meta["val_accuracy"] >= 0.95


def test_a_changed_file_is_refused(tmp_path):
    raw = bytearray(_packaged_weights().read_bytes())
    path = tmp_path / "w.pt"
    path.write_bytes(bytes(raw))
    load_concept_cnn(path, sha256=WEIGHTS_SHA256)  # a copy of the shipped file is accepted
    raw[-100] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="sha256"):
        load_concept_cnn(path, sha256=WEIGHTS_SHA256)
    torch.save({"weights": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a concept CNN checkpoint"):
        load_concept_cnn(tmp_path / "x.pt")


@pytest.mark.numerics
def test_the_script_retrains_a_model_as_good_as_the_shipped_one(tmp_path, capsys):
    """What holds across machines is the accuracy, not the bits (another CPU's kernels round the 144 training
    steps differently). The shipped weights (AMD EPYC, AVX2, torch 2.13.0) have validation accuracy 0.977; the
    retrained model must be within 0.03 (9 of 300 images) of it and keep the global RNG and thread count."""
    threads, rng = torch.get_num_threads(), torch.random.get_rng_state()
    out = tmp_path / "w.pt"
    main(["--out", str(out)])
    assert torch.get_num_threads() == threads and torch.equal(torch.random.get_rng_state(), rng)
    assert "validation accuracy" in capsys.readouterr().out
    new, meta = load_concept_cnn(out)
    _, shipped = load_concept_cnn()
    assert meta["config"] == shipped["config"]
    assert meta["val_accuracy"] == pytest.approx(shipped["val_accuracy"], abs=0.03)
    assert {k: v.shape for k, v in new.state_dict().items()} == \
        {k: v.shape for k, v in load_concept_cnn()[0].state_dict().items()}


def test_concept_cnn_is_the_synthetic_cnn_undilated_with_relus_not_in_place():
    from interpretorch.models.synthetic_cnn import SyntheticCNN

    model, _ = load_concept_cnn()
    assert isinstance(model, SyntheticCNN)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.dilation for c in convs] == [(1, 1)] * 4
    assert not any(m.inplace for m in model.features if isinstance(m, torch.nn.ReLU))
    assert [c.dilation for c in SyntheticCNN().features if isinstance(c, torch.nn.Conv2d)][-1] == (2, 2)
