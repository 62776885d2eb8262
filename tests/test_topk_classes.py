"""--topk larger than the model's classes is refused, not silently capped."""
from __future__ import annotations

import pytest
import torch

from interpretorch.cli import main
from interpretorch.models import TinyCNN
from interpretorch.run import run


def test_topk_more_than_the_classes_is_refused(capsys):
    model = TinyCNN(num_classes=4, width=4).eval()
    x = torch.rand(1, 3, 32, 32)
    assert len(run(model, x, ["gradient"], top_classes=4).ranks) == 3  # ranks 2..4: every class is allowed
    with pytest.raises(ValueError, match="5 is more than the model's 4 classes"):
        run(model, x, ["gradient"], top_classes=5)


def test_cli_topk_50_on_a_10_class_model_exits_2(tmp_path, capsys):
    rc = main(["explain", "--model", "tiny_cnn", "--methods", "gradient", "--topk", "50", "--out", str(tmp_path)])
    assert rc == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and "50 is more than the model's" in err[0]
