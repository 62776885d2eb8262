"""The ``crp`` command and ``discover --method craft``: pages and JSON written, numbers that add up, bad input
refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from interpretorch.cli import main


@pytest.fixture
def folder(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(imgs / f"{i}.png")
    return imgs


def test_crp_command_writes_the_page_graph_and_references(folder, tmp_path, capsys):
    out = tmp_path / "crp"
    code = main(["crp", str(folder / "0.png"), "--model", "tiny_cnn", "--size", "32", "--layer", "features.10",
                 "--top", "2", "--graph", "features.6", "--graph-top", "2", "--reference", str(folder),
                 "--reference-top", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "crp.json").read_text())
    img = data["images"][0]
    assert len(img["conditions"]) == 2
    # the most relevant channels come first
    rel = [c["relevance"] for c in img["conditions"]]
    assert rel == sorted(rel, reverse=True)
    for c in img["conditions"]:  # a share is the channel's part of the relevance of the whole layer
        assert c["share"] == pytest.approx(c["relevance"] / img["total"])
    g = data["graphs"][0]
    assert g["layer"] == "features.10" and g["channel"] == img["conditions"][0]["condition"]
    assert [c["layer"] for c in g["children"]] == ["features.6", "features.6"]
    html = (out / "index.html").read_text()
    assert "Reference images" in html and "Attribution graphs" in html
    assert (out / "figures" / f"ref{img['conditions'][0]['condition']}_rel.png").is_file()
    # a resumed reference pass over the same folder gives the same page
    assert main(["crp", str(folder / "0.png"), "--model", "tiny_cnn", "--size", "32", "--layer", "features.10",
                 "--top", "2", "--reference", str(folder), "--reference-top", "2", "--resume",
                 "--out", str(out)]) == 0


def test_crp_command_refuses_bad_channels_and_layers(folder, tmp_path, capsys):
    base = ["crp", str(folder), "--model", "tiny_cnn", "--size", "32", "--out", str(tmp_path / "o")]
    assert main(base + ["--layer", "features.10", "--channels", "999"]) == 2
    assert "outside layer" in capsys.readouterr().err
    assert main(base + ["--layer", "no.such"]) == 2
    assert main(base + ["--layer", "features.10", "--reference", str(folder), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_discover_craft_command(folder, tmp_path, capsys):
    out = tmp_path / "craft"
    code = main(["discover", "--method", "craft", "--images", str(folder), "--target", "2", "--model", "tiny_cnn",
                 "--size", "32", "--concepts", "3", "--designs", "8", "--crops-per-image", "12",
                 "--recursive", "features.6",
                 "--sub-concepts", "2", "--split", "1", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "last non-negative feature map" in text
    data = json.loads((out / "concepts.json").read_text())
    imps = [c["importance"] for c in data["concepts"]]
    assert data["method"] == "craft" and imps == sorted(imps, reverse=True)
    assert data["options"]["crops_per_image"] == 12
    assert len(data["concepts"][0]["sub_concepts"]) == 2
    html = (out / "index.html").read_text()
    assert "Sobol" in html and "where it mattered" in html
    # every ranked concept carries its CRP relevance along its direction on each shown image, and its figure
    assert all(len(c["relevance_along_direction"]) == len(data["shown_images"]) for c in data["concepts"])
    assert all((out / "figures" / f"concept{i}_relevance.png").exists() for i in range(3))
    assert "rebuilt from the concepts" in text
    assert main(["discover", "--method", "craft", "--images", str(folder), "--target", "2", "--model", "tiny_cnn",
                 "--size", "32", "--layer", "features.8", "--out", str(out)]) == 2
    assert "negative activations" in capsys.readouterr().err
    assert main(["discover", "--method", "nmf", "--images", str(folder), "--target", "2", "--model", "tiny_cnn",
                 "--out", str(out)]) == 2
    assert main(["discover", "--method", "craft", "--images", str(folder), "--target", "2", "--model", "tiny_cnn",
                 "--designs", "6", "--out", str(out)]) == 2


def test_dissect_relevance_page(tmp_path, capsys):
    """dissect --relevance: each reported unit's images by relevance (checked against channel_relevance over the
    whole probe set) on a page linked from the layer page."""
    import torch

    from interpretorch.attribution.crp import channel_relevance
    from interpretorch.cli.common import load_model_from_args
    from interpretorch.dissect.broden import BrodenDataset, collate

    probe, out = tmp_path / "probe", tmp_path / "d"
    assert main(["make-probe", str(probe), "--images", "8", "--size", "32", "--seed", "1"]) == 0
    args = ["dissect", "--data", str(probe), "--model", "interpretorch.dissect.train:ProbeCNN", "--layers", "conv1.2",
            "--report-units", "3", "--top-images", "2", "--relevance", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    page = (out / "conv1.2_relevance.html").read_text()
    assert "conv1.2_relevance.html" in (out / "conv1.2.html").read_text()
    assert page.count("by relevance\"") == 3
    # the images by relevance are those of largest channel relevance for the predicted class
    import argparse
    ns = argparse.Namespace(model="interpretorch.dissect.train:ProbeCNN", device="cpu", size=None, mean=None,
                            std=None, trust_model_file=False, batch_size=None)
    loaded = load_model_from_args(ns)
    ds = BrodenDataset(probe, mean=loaded.preprocess.mean, std=loaded.preprocess.std)
    x = collate([ds[i] for i in range(len(ds))])["image"]
    rel = channel_relevance(loaded.model, x, "top1", ["conv1.2"])["conv1.2"]
    state = torch.load(out / "conv1.2_relevance.pt", weights_only=True)
    expected = rel.T.argsort(dim=1, descending=True, stable=True)[:, :2]
    assert torch.equal(state["relevance"]["indices"], expected)
