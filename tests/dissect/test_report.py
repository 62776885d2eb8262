"""HTML report: headline numbers, escaped file names, outlined regions, model unchanged."""
from __future__ import annotations

import numpy as np
from PIL import Image

from dissect_handmade import Channels, write_handmade
from interpretorch.dissect.broden import BrodenDataset
from interpretorch.dissect.report import outline, write_layer_report
from interpretorch.dissect.run import dissect


def test_outline():
    region = np.zeros((5, 5), bool)
    region[1:4, 1:4] = True
    ring = region.copy()
    ring[2, 2] = False
    assert np.array_equal(outline(region), ring)


def test_layer_report(tmp_path, snapshot):
    root = write_handmade(tmp_path / "d")
    (root / "images" / "b.png").rename(root / "images" / "<b>.png")
    index = (root / "index.csv").read_text().replace("b.png,train", "<b>.png,train")
    (root / "index.csv").write_text(index)
    ds = BrodenDataset(root, mean=(0, 0, 0), std=(1, 1, 1))
    model = Channels()
    snap = snapshot(model)
    res = dissect(model, ds, "feat", quantile=0.25, iou_threshold=0.3, top_images=2)
    page = write_layer_report(res, "feat", model, ds, tmp_path / "out")
    html = page.read_text()
    assert "<b>2/3</b> units covering <b>2</b> concepts" in html
    assert "&lt;b&gt;.png" in html and "<b>.png" not in html
    # unit 2 (B) lists image A among its 2 top images, where B is 0 everywhere: the flag says its peak is not above
    # the threshold (not that the upsampling hid it)
    assert "On 1 the unit" in html and "peak is not above its threshold" in html and "isolated peak" not in html
    # unit 1 (G) on image B: region = column 0, outlined in yellow, the rest dimmed
    strip = np.asarray(Image.open(tmp_path / "out" / "feat_files" / "unit0001.png"))
    assert strip.shape == (4, 4 + 3 + 4, 3)
    assert (tmp_path / "out" / "feat_files" / "concepts.png").exists()
    b_tile = strip[:, :4] if res.layers["feat"].top_indices[1, 0] == 1 else strip[:, 7:]
    # the outline is dashed yellow / black (3 px each along x + y) so it shows on yellow images too
    assert [tuple(p) for p in b_tile[:, 0]] == [(255, 230, 0)] * 3 + [(0, 0, 0)]
    assert (b_tile[:, 1:] != (255, 230, 0)).any(axis=-1).all()
    # an index over the layer pages, with each layer's headline, and report.json with the same answer
    import json

    index = (tmp_path / "out" / "index.html").read_text()
    assert 'href="feat.html"' in index and "2 of 3 units are detectors" in index
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["layers"]["feat"]["detectors"] == 2 and "2 of 3 units are detectors" in rep["headline"] + index
    assert html.index("2 of 3 units are detectors") < html.index("<table")
    snap.assert_unchanged()


def test_empty_regions_say_why_nothing_is_outlined():
    """A top image can show no region for two reasons, and the flag names both: the bilinear upsampling lowers an
    isolated peak of the feature map below the threshold (the unit does fire above it), or the peak itself is
    not above the threshold. Measured (``measure_empty_regions.py``: the trained probe CNN, 100 probe images at
    64 px): conv3.2's one empty top image of 512 and 2 of conv4.2's 10 were the first kind, conv4.2's other 8 the
    second."""
    import torch
    import torch.nn.functional as F

    from interpretorch.dissect.report import layer_answer

    peak = torch.zeros(1, 1, 4, 4)
    peak[0, 0, 1, 1] = 1.0
    up = F.interpolate(peak, size=(16, 16), mode="bilinear", align_corners=False)
    assert float(up.max()) < 0.8  # a 0.8 threshold is passed on the map, nowhere on the image
    s = {"layer": "conv3", "units": 16, "detectors": 2, "iou_threshold": 0.04, "unique_concepts": 2}
    units = [{"unit": 0, "iou": 0.08, "empty_regions": 3, "empty_by_upsampling": 1, "empty_below_threshold": 2},
             {"unit": 1, "iou": 0.05, "empty_regions": 0, "empty_by_upsampling": 0, "empty_below_threshold": 0}]
    (flag,) = layer_answer(s, 60, units)[1]
    assert flag["by_upsampling"] == 1 and flag["below_threshold"] == 2 and flag["units"] == [0]
    assert "On 1 of them the unit does fire above its threshold" in flag["text"]
    assert "On 2 the unit's peak is not above its threshold" in flag["text"]
    only = [{**units[0], "empty_regions": 1, "empty_below_threshold": 0}]
    assert "not above its threshold" not in layer_answer(s, 60, only)[1][0]["text"]
