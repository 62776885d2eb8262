"""Broden reader: decoding, safety of paths, line-numbered errors; the probe set reads back as written."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from dissect_handmade import write_handmade
from interpretorch.dissect.broden import BrodenDataset, BrodenError, collate, decode_mask, encode_mask, read_broden
from interpretorch.dissect.probe import CATEGORIES, draw_probe_image, label_table, make_probe


def _edit_index(root, line: int, new: str) -> None:
    lines = (root / "index.csv").read_text().splitlines()
    lines[line - 1] = new
    (root / "index.csv").write_text("\n".join(lines) + "\n")


def test_mask_encoding_round_trip(tmp_path):
    labels = np.array([[0, 1, 255], [256, 300, 65535]])
    Image.fromarray(encode_mask(labels)).save(tmp_path / "m.png")
    assert np.array_equal(decode_mask(tmp_path / "m.png", "test"), labels)  # R + 256 * G


def test_reads_handmade(tmp_path):
    ds = BrodenDataset(write_handmade(tmp_path), mean=(0, 0, 0), std=(1, 1, 1))
    assert ds.categories == ["color", "object", "scene"] and len(ds) == 2 and ds.mask_size == (4, 4)
    a, b = ds[0], ds[1]
    assert a["pixel"].shape == (1, 4, 4) and b["pixel"].shape == (2, 4, 4)
    assert a["image_labels"].tolist() == [3] and b["image_labels"].tolist() == [4]
    assert a["categories"].tolist() == [True, False, True] and b["categories"].tolist() == [True, True, True]
    assert a["image"][0, :2, :2].eq(1).all() and a["image"][0, 2:].eq(0).all()
    batch = collate([a, b])
    assert batch["pixel"].shape == (2, 2, 4, 4) and batch["pixel"][0, 1].eq(0).all()


@pytest.mark.parametrize("bad, match", [("../outside.png", r"'\.\.'"), ("/etc/passwd", "absolute"),
                                        ("sub/../../x.png", r"'\.\.'")])
def test_index_escaping_its_folder_is_refused(tmp_path, bad, match):
    root = write_handmade(tmp_path / "d")
    _edit_index(root, 2, f"{bad},train,4,4,4,4,a_color.png,,3")
    with pytest.raises(BrodenError, match=f"index.csv line 2: .*{match}"):
        read_broden(root)
    root2 = write_handmade(tmp_path / "e")
    _edit_index(root2, 3, f"b.png,train,4,4,4,4,{bad},b_object.png,4")
    with pytest.raises(BrodenError, match=f"index.csv line 3: .*{match}"):
        BrodenDataset(root2)


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    root = write_handmade(tmp_path / "d")
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(outside)
    os.symlink(outside, root / "images" / "link.png")
    _edit_index(root, 2, "link.png,train,4,4,4,4,a_color.png,,3")
    with pytest.raises(BrodenError, match="line 2: .*leaves the dataset folder"):
        read_broden(root)


def test_malformed_rows_name_their_line(tmp_path):
    root = write_handmade(tmp_path / "d")
    _edit_index(root, 3, "b.png,train,4,4,4")
    with pytest.raises(BrodenError, match="index.csv line 3: 5 fields, the header has 9"):
        read_broden(root)
    _edit_index(root, 3, "b.png,train,four,4,4,4,b_color.png,,4")
    with pytest.raises(BrodenError, match="index.csv line 3: ih must be an integer, got 'four'"):
        read_broden(root)
    _edit_index(root, 3, "b.png,train,4,4,4,4,b_color.png,,99")
    with pytest.raises(BrodenError, match="index.csv line 3: image-level label 99"):
        read_broden(root)
    root = write_handmade(tmp_path / "e")
    _edit_index(root, 1, "image,split,ih,iw,sh,sw,color,material,scene")
    with pytest.raises(BrodenError, match="material are not categories"):
        read_broden(root)


def test_missing_files_are_named(tmp_path):
    root = write_handmade(tmp_path / "d")
    (root / "images" / "b_object.png").unlink()
    ds = BrodenDataset(root)
    ds[0]
    with pytest.raises(BrodenError, match="line 3: missing mask file .*b_object.png"):
        ds[1]
    (root / "label.csv").unlink()
    with pytest.raises(BrodenError, match="missing file .*label.csv"):
        read_broden(root)
    with pytest.raises(BrodenError, match="does not exist"):
        read_broden(tmp_path / "nowhere")


def test_unknown_mask_label_is_named(tmp_path):
    root = write_handmade(tmp_path / "d")
    m = np.zeros((4, 4), int)
    m[0, 0] = 300
    Image.fromarray(encode_mask(m)).save(root / "images" / "a_color.png")
    with pytest.raises(BrodenError, match="line 2: mask 'a_color.png' holds label 300"):
        BrodenDataset(root)[0]


def test_probe_round_trip(tmp_path):
    root = make_probe(tmp_path / "p", n_images=6, size=64, seed=1)
    ds = BrodenDataset(root, mean=(0, 0, 0), std=(1, 1, 1))
    assert ds.categories == list(CATEGORIES) and len(ds) == 6 and ds.mask_size == (32, 32)
    names = {n: (name, cat) for n, name, cat in label_table()}
    img, lab, scene = draw_probe_image(1, 4, 64)
    item = ds[4]
    assert torch.allclose(item["image"], torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert item["image_labels"].tolist() == [scene] and names[scene][1] == "scene"
    pick = (np.arange(32) * 2 + 1)  # mask pixel centres on the 64 px image
    got = {ds.info.categories[ci]: item["pixel"][j].numpy() for j, (ci, _) in enumerate(ds.info.rows[4].masks)}
    for cat, full in lab.items():
        want = full[np.ix_(pick, pick)]
        if want.any():
            assert np.array_equal(got[cat], want)
            assert {names[n][1] for n in np.unique(want[want > 0])} == {cat}
    # seeded: the same files again, and the first images do not depend on how many are asked for
    again = make_probe(tmp_path / "q", n_images=3, size=64, seed=1)
    for i in range(3):
        assert (root / "images" / "probe" / f"{i:06d}.png").read_bytes() == \
            (again / "images" / "probe" / f"{i:06d}.png").read_bytes()
    counts = {n: 0 for n in names}
    for i in range(len(ds)):
        for n in torch.cat([ds[i]["pixel"].unique(), ds[i]["image_labels"]]).tolist():
            if n:
                counts[n] += 1
    import csv
    with open(root / "label.csv") as f:
        freq = {int(r["number"]): int(r["frequency"]) for r in csv.DictReader(f) if r["number"] != "0"}
    assert freq == counts  # label.csv's frequency = number of images carrying the label
    assert sum(counts[n] for n in names if names[n][1] == "scene") == 6
