"""The library-level run: predictions from the methods' own clean pass, timings, and the report rendering it."""
from __future__ import annotations

import json

import torch

import interpretorch as it
from interpretorch.models import TinyCNN
from interpretorch.report import write_report


class Counting(TinyCNN):
    """TinyCNN that counts how many rows its forward saw."""

    rows = 0

    def forward(self, x):
        Counting.rows += x.shape[0]
        return super().forward(x)


def test_predictions_come_from_the_methods_pass_without_an_extra_forward():
    model = Counting(num_classes=5).eval()
    x = torch.rand(3, 3, 32, 32)
    it.explain(model, x[:1], "gradcam")  # the default layer is found once by a dry pass: not counted below
    Counting.rows = 0
    r = it.run(model, x, ["gradcam", "gradcam++", "eigencam"], batch_size=8)
    assert Counting.rows == 3  # one shared pass over the three images, nothing else
    with torch.no_grad():
        probs = model(x).softmax(1)
    assert [p[0]["index"] for p in r.predictions] == probs.argmax(1).tolist()
    assert abs(r.predictions[0][0]["prob"] - float(probs[0].max())) < 1e-6
    assert r.methods["gradcam"].shared_with == ["gradcam++", "eigencam"]
    assert r.methods["gradcam"].seconds == r.methods["eigencam"].seconds > 0


def test_run_result_renders_to_json_and_html_without_argparse(tmp_path):
    model, x = TinyCNN(num_classes=5).eval(), torch.rand(2, 3, 32, 32)
    r = it.run(model, x, ["gradcam", "gradient"], target=[1, 2], names=["a", "b"], evaluate=True,
               metrics=["deletion", "insertion"], display=torch.rand(2, 3, 32, 32))
    page = write_report(r, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [i["name"] for i in results["images"]] == ["a", "b"]
    assert results["images"][1]["methods"]["gradient"]["target"] == 2
    assert set(results["evaluation"]) == {"gradcam", "gradient"} and results["evaluation_seconds"] > 0
    html = page.read_text()
    assert "Deletion AUC" in html and "images/curve_deletion.png" in html and "<table" in html
