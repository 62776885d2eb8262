"""Reading datasets: the layouts, labels, VOC boxes and masks through the preprocessing's crop, random subsets,
and the errors (no images, a path outside the dataset, an unreadable image)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from scale_data import PRE, voc_xml, write_dataset
from interpretorch.datasets import DatasetError, open_images
from interpretorch.datasets.streams import ImageStream, loader, read_voc_boxes, transform_boxes
from interpretorch.data.synthetic import SHAPES, make_image


def test_imagefolder_labels_by_sorted_folder_or_number(tmp_path):
    data = write_dataset(tmp_path, 6)
    ds = open_images(data)
    names = sorted({r.path.split("/")[0] for r in ds.records})
    assert ds.kind == "imagefolder" and ds.classes == names and len(ds) == 6
    for r in ds.records:
        assert r.label == names.index(r.path.split("/")[0])
        assert SHAPES[make_image(0, int(r.path[-8:-4]), 32)[1]] == r.path.split("/")[0]
    num = tmp_path / "num"
    for cls in ("3", "10"):
        (num / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(num / cls / "a.png")
    assert sorted((r.path, r.label) for r in open_images(num).records) == [("10/a.png", 10), ("3/a.png", 3)]


def test_list_with_labels_and_labels_file(tmp_path):
    data = write_dataset(tmp_path, 4, layout="folder")
    (data / "index.csv").write_text("path,label\nimg0002.png,3\nimg0000.png,1\n")
    ds = open_images(data / "index.csv")
    assert ds.kind == "list" and [(r.path, r.label) for r in ds.records] == [("img0002.png", 3), ("img0000.png", 1)]
    (data / "list.txt").write_text("img0001.png\nimg0003.png\n")
    (tmp_path / "labels.csv").write_text("img0001,2\nimg0003.png,0\n")
    ds = open_images(data / "list.txt", labels=tmp_path / "labels.csv")
    assert [(r.path, r.label) for r in ds.records] == [("img0001.png", 2), ("img0003.png", 0)] and ds.has_labels
    assert not open_images(data).has_labels


def test_limit_is_a_reproducible_random_subset_in_order(tmp_path):
    data = write_dataset(tmp_path, 12, layout="folder")
    a, b = open_images(data, limit=5, seed=1), open_images(data, limit=5, seed=1)
    assert [r.path for r in a.records] == [r.path for r in b.records]
    assert [r.index for r in a.records] == sorted(r.index for r in a.records) and len(a) == 5
    assert [r.path for r in open_images(data, limit=5, seed=2).records] != [r.path for r in a.records]
    assert a.fingerprint() != open_images(data).fingerprint()


def test_paths_outside_the_dataset_are_refused(tmp_path):
    data = write_dataset(tmp_path / "d", 2, layout="folder")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    for line in ("../secret.png", str(tmp_path / "secret.png")):
        (data / "list.txt").write_text(f"img0000.png\n{line}\n")
        with pytest.raises(DatasetError, match="outside the dataset folder"):
            open_images(data / "list.txt")
    os.symlink(tmp_path / "secret.png", data / "link.png")
    with pytest.raises(DatasetError, match="link.png.*outside the dataset folder"):
        open_images(data)


def test_empty_missing_and_bad_datasets(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images"):
        open_images(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_images(tmp_path / "nowhere")
    (tmp_path / "l.csv").write_text("path,label\n")
    with pytest.raises(DatasetError, match="no images"):
        open_images(tmp_path / "l.csv")
    (tmp_path / "l.csv").write_text("missing.png,1\n")
    with pytest.raises(DatasetError, match="l.csv:1: no such image 'missing.png'"):
        open_images(tmp_path / "l.csv")
    data = write_dataset(tmp_path / "d", 1, layout="folder")
    (data / "l.csv").write_text("img0000.png,cat\n")
    with pytest.raises(DatasetError, match="label 'cat' is not a class index"):
        open_images(data / "l.csv")


def test_unreadable_image_is_named_not_fatal(tmp_path):
    data = write_dataset(tmp_path, 2, layout="folder")
    (data / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    ds = open_images(data)
    batch = next(iter(loader(ds, PRE, ds.records, batch_size=3, workers=1)))
    assert batch["error"][:2] == [None, None]
    assert "zz_broken.jpg" in batch["error"][2] and batch["image"].shape == (3, 3, 32, 32)


def test_voc_boxes_and_masks_follow_the_resize_and_crop(tmp_path):
    # a 64 x 32 image preprocessed to 32 px: scale 1, the centre crop drops 16 columns on the left
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (64, 32), (200, 10, 10)).save(data / "wide.png")
    (tmp_path / "boxes").mkdir()
    (tmp_path / "boxes" / "wide.xml").write_text(voc_xml([(20, 4, 40, 10), (0, 0, 10, 10)], 64, 32))
    assert read_voc_boxes(tmp_path / "boxes" / "wide.xml").tolist() == [[20, 4, 40, 10], [0, 0, 10, 10]]
    item = ImageStream(open_images(data, boxes=tmp_path / "boxes"), PRE)[0]
    assert item["boxes"].tolist() == [[4, 4, 24, 10]]  # the second box lies in the cropped-off part
    mask = np.zeros((32, 64), np.uint8)
    mask[4:10, 20:40] = 1
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "wide.png")
    got = ImageStream(open_images(data, masks=tmp_path / "masks"), PRE)[0]["mask"]
    want = torch.zeros(32, 32, dtype=torch.bool)
    want[4:10, 4:24] = True
    assert torch.equal(got, want)
    # 2x downscale: 128 x 64 -> 64 x 32, boxes halve
    assert transform_boxes(np.array([[40, 8, 80, 20]], np.float32), 128, 64, 32).tolist() == [[4, 4, 24, 10]]
    with pytest.raises(DatasetError, match="not both"):
        open_images(data, boxes=tmp_path / "boxes", masks=tmp_path / "masks")


def test_generated_truth_matches_the_synthetic_set(tmp_path):
    data = write_dataset(tmp_path, 3, layout="folder", boxes=True, masks=True)
    for gt in ("boxes", "masks"):
        ds = open_images(data, **{gt: tmp_path / gt})
        for i, item in enumerate(ImageStream(ds, PRE)):
            _, _, mask, box = make_image(0, i, 32)
            if gt == "boxes":
                assert item["boxes"].tolist() == [box.tolist()]
            else:
                assert torch.equal(item["mask"], torch.from_numpy(mask))
