"""An intervention on a concept no generated image shows says so (n=0) instead of "removes 0.0 %"."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from interpretorch.cli import main
from interpretorch.gan.intervene import Ablation

HERE = Path(__file__).parent
TOY = ["--generator", "gan_toys:toy_generator", "--segmenter", "gan_toys:absent_class_segmenter", "--samples", "20",
       "--quantile", "0.5", "--intervention-samples", "6"]


@pytest.fixture(autouse=True)
def _toys_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_absent_concept_has_no_removed_percentage():
    a = Ablation("C", "feat", "top", [0], 0.0, before=torch.zeros(5), after=torch.zeros(5)).to_dict()
    assert a["present"] == 0 and a["removed"] is None and a["removed_band95"] is None
    b = Ablation("A", "feat", "top", [0], 0.0, before=torch.tensor([0.5, 0.0]), after=torch.zeros(2)).to_dict()
    assert b["present"] == 1 and b["removed"] == 1.0


def test_gan_intervene_on_an_absent_concept_says_it_is_absent(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["gan-intervene", *TOY, "--layer", "feat", "--concept", "C", "--units", "1",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "C is absent from the 6 generated images (n=0)" in printed and "removes" not in printed
    inter = json.loads((out / "interventions.json").read_text())
    assert inter[0]["ablations"][0]["removed"] is None and inter[0]["ablations"][0]["present"] == 0
    html = (out / "index.html").read_text()
    assert "absent from the generated images (n=0)" in html
