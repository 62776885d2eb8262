"""dissect reads images as explain does: 16-bit PNGs rescaled (not saturated); an undecodable image (garbage,
a decompression bomb) is skipped and named, the rest dissected as if it were not listed; a garbage or empty
mask file is a one-line error naming the file."""
from __future__ import annotations

import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from interpretorch.cli import main
from interpretorch.dissect.broden import BrodenDataset
from interpretorch.models.preprocess import load_image

MODEL = "interpretorch.dissect.train:ProbeCNN"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    d = tmp_path_factory.mktemp("files") / "probe"
    assert main(["make-probe", str(d), "--images", "6", "--size", "32", "--seed", "3"]) == 0
    return d


def _copy(probe, tmp_path, name="data"):
    d = tmp_path / name
    shutil.copytree(probe, d)
    return d


def _args(data, out):
    return ["dissect", "--data", str(data), "--model", MODEL, "--layers", "conv1.2,conv3.2", "--out", str(out),
            "--quantile", "0.05", "--batch-size", "1", "--no-report"]


def _bomb_png(path) -> None:
    """A PNG header claiming 30000 x 30000 pixels (beyond Pillow's decompression-bomb limit)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_16_bit_png_is_rescaled_as_explain_rescales_it(probe, tmp_path):
    data = _copy(probe, tmp_path)
    first = data / "images" / "probe" / "000000.png"
    gray = np.asarray(Image.open(first).convert("L")).astype(np.uint16) * 257
    Image.fromarray(gray).save(first)  # uint16: mode I;16
    assert Image.open(first).mode.startswith("I;16")
    arr = BrodenDataset(data).load_image(0)
    assert np.array_equal(arr, load_image(first))
    assert (arr == 255).mean() < 0.5  # before: 99.7 % white
    np.testing.assert_allclose(arr[..., 0], gray / 257, atol=1)


@pytest.mark.parametrize("spoil", ["garbage", "bomb"])
def test_undecodable_image_is_skipped_and_named(probe, tmp_path, capsys, spoil):
    data = _copy(probe, tmp_path)
    bad = data / "images" / "probe" / "000002.png"
    if spoil == "garbage":
        bad.write_bytes(b"not a png")
    else:
        _bomb_png(bad)
    assert main(_args(data, tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "skipping index.csv line 4" in err and str(bad) in err and "Traceback" not in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["skipped_images"] == ["probe/000002.png"] and summary["images"] == 5
    # the same as a dataset that does not list the image
    without = _copy(probe, tmp_path, "without")
    lines = (without / "index.csv").read_text().splitlines()
    (without / "index.csv").write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    assert main(_args(without, tmp_path / "ref")) == 0
    ref = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert ref["images"] == 5 and summary["layers"] == ref["layers"]
    for layer in ("conv1.2", "conv3.2"):
        assert ((tmp_path / "out" / f"{layer}_tally.csv").read_text()
                == (tmp_path / "ref" / f"{layer}_tally.csv").read_text())


@pytest.mark.parametrize("content", [b"", b"garbage, not a PNG"])
def test_unreadable_mask_is_a_one_line_error_naming_the_file(probe, tmp_path, capsys, content):
    data = _copy(probe, tmp_path)
    mask = data / "images" / "probe" / "000001_object.png"
    mask.write_bytes(content)
    assert main(_args(data, tmp_path / "out")) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and "cannot read mask file" in err[0] and str(mask) in err[0]
