"""The single-image report's metric table bolds a best cell only when the difference is established (the best
mean's 95% t interval overlaps no other method's), and says so."""
from __future__ import annotations

from interpretorch.report.evaluation import evaluation_table


def _entry(value: float, std: float, n: int) -> dict:
    return {"value": value, "std": std, "n": n}


def test_no_bold_cell_when_means_differ_by_far_less_than_their_spread():
    ev = {"gradcam": {"insertion": _entry(0.176, 0.2, 3)}, "scorecam": {"insertion": _entry(0.173, 0.2, 3)}}
    table = evaluation_table(ev, {"gradcam": "region", "scorecam": "region"})
    cells = [c for r in table["rows"] for c in r["cells"]]
    assert [c["best"] for c in cells] == [True, False]  # the higher mean is still known
    assert not any(c["bold"] for c in cells)
    assert "overlaps no other" in table["groups"][0]["bold_rule"]


def test_bold_cell_when_the_intervals_are_apart():
    ev = {"gradcam": {"deletion": _entry(0.10, 0.01, 20)}, "scorecam": {"deletion": _entry(0.30, 0.01, 20)}}
    table = evaluation_table(ev, {"gradcam": "region", "scorecam": "region"})
    bold = {r["method"]: r["cells"][0]["bold"] for r in table["rows"]}
    assert bold == {"gradcam": True, "scorecam": False}  # lower deletion is better
