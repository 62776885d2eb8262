"""gandissect / gan-intervene refuse a second writer into one --out (one line, exit 2) and free it after."""
from __future__ import annotations

from pathlib import Path

import pytest

from interpretorch.cli import main
from interpretorch.runstate import LOCK_NAME, OutputLock

HERE = Path(__file__).parent
TOY = ["--generator", "gan_toys:toy_generator", "--segmenter", "gan_toys:toy_segmenter", "--samples", "8",
       "--quantile", "0.5", "--intervention-samples", "4", "--layers", "feat", "--units", "1"]


@pytest.fixture(autouse=True)
def _toys_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


def test_second_gandissect_into_one_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    with OutputLock(out):
        assert main(["gandissect", *TOY, "--out", str(out)]) == 2
        err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
        assert len(err) == 1 and "in use by another interpretorch run" in err[0]
        assert not (out / "summary.json").exists()
    assert main(["gandissect", *TOY, "--out", str(out)]) == 0
    assert (out / "summary.json").exists() and not (out / LOCK_NAME).exists()
