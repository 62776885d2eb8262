"""The dataset annotation format (``datasets.annotations``): a generated scene set written by ``save_scene_set``
reads back with the same boxes and masks, and a bad file (a path leaving the folder, corrupt JSON, a box outside
its image, a mask that does not fit) is refused with an error naming the file, the image and the object."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interpretorch.data.synthetic import make_scene_set, save_scene_set
from interpretorch.datasets.annotations import read_annotations, resolve_labels
from interpretorch.datasets.streams import DatasetError, ImageStream, open_images
from interpretorch.models.preprocess import Preprocess
from interpretorch.datasets.annotations import AnnotationError


@pytest.fixture(scope="module")
def scenes():
    return make_scene_set(3, seed=5, size=48)


@pytest.fixture
def written(tmp_path, scenes):
    return save_scene_set(scenes, tmp_path / "scenes")


def _edit(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_scene_set_reads_back_with_its_boxes_and_masks(written, scenes):
    root, objects = read_annotations(written)
    assert root == written.parent and [o.file for o in objects] == [f"images/scene_{i:05d}.png" for i in range(3)]
    for o, boxes, labels in zip(objects, scenes.boxes, scenes.labels):
        np.testing.assert_array_equal(o.boxes, boxes.numpy())
        assert o.labels == tuple(scenes.classes[int(y)] for y in labels)
    data = open_images(written.parent)  # the folder holding annotations.json
    assert data.kind == "annotated" and len(data) == 3 and data.annotation_file == written
    stream = ImageStream(data, Preprocess(48, (0.5,) * 3, (0.5,) * 3))
    for i in range(3):
        item = stream[i]
        assert item["error"] is None
        np.testing.assert_allclose(item["objects"]["boxes"].numpy(), scenes.boxes[i].numpy())
        inst = item["objects"]["instances"]
        for k in range(scenes.masks[i].shape[0]):
            assert torch.equal(inst == k + 1, scenes.masks[i][k])
        assert float((item["image"] - scenes.images[i]).abs().max()) <= 0.5 / 255 + 1e-6  # 8-bit PNG


def test_boxes_follow_the_resize_and_crop(written, scenes):
    data = open_images(written)  # the annotation file itself
    item = ImageStream(data, Preprocess(24, (0.5,) * 3, (0.5,) * 3))[0]
    np.testing.assert_allclose(item["objects"]["boxes"].numpy(), scenes.boxes[0].numpy() / 2)
    assert item["objects"]["instances"].shape == (24, 24)


def test_labels_resolve_to_the_models_classes(written):
    _, objects = read_annotations(written)
    names = ["background", "disk", "square", "triangle", "cross"]
    got = resolve_labels(objects, names)
    assert got[objects[0].file] == tuple(names.index(lab) for lab in objects[0].labels)
    with pytest.raises(AnnotationError, match=r"scene_00000.png, object 0: .*class"):
        resolve_labels(objects, ["cat", "dog"])


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["images"][1].update(file="../outside.png"), r"images\[1\] file: '../outside.png' is outside the dataset folder"),
    (lambda d: d["images"][0].update(mask="/etc/passwd"), r"scene_00000.png mask: '/etc/passwd' is outside the dataset folder"),
    (lambda d: d["images"][2].update(file="images/missing.png"), r"no such file 'images/missing.png'"),
    (lambda d: d["images"][0]["objects"][0].update(box=[40, 2, 50, 20]), r"scene_00000.png, object 0: box \[40, 2, 50, 20\] lies outside the 48x48 image"),
    (lambda d: d["images"][0]["objects"][0].update(box=[-1, 2, 10, 20]), r"object 0: box .* lies outside"),
    (lambda d: d["images"][0]["objects"][0].update(box=[10, 2, 5, 20]), r"object 0: box .* is empty or reversed"),
    (lambda d: d["images"][0]["objects"][0].update(box=[1, 2, 3]), r"object 0: box must be 4 finite numbers"),
    (lambda d: d["images"][0]["objects"][0].pop("label"), r"object 0: expected \{'label'"),
    (lambda d: d.update(format="coco"), r"not an annotation file"),
    (lambda d: d.update(images=[]), r"'images' must be a non-empty list"),
    (lambda d: d["images"].append(dict(d["images"][0])), r"scene_00000.png: listed twice"),
])
def test_bad_annotations_are_refused_when_opened(written, edit, message):
    _edit(written, edit)
    with pytest.raises(DatasetError, match=message):
        open_images(written.parent)


def test_corrupt_or_missing_annotation_file(tmp_path, written):
    written.write_text('{"format": "interpretorch-objects", "images": [')
    with pytest.raises(DatasetError, match=r"annotations.json': not valid JSON \(line 1"):
        open_images(written.parent)
    with pytest.raises(DatasetError, match="no such file or folder"):
        open_images(tmp_path / "nowhere.json")
    with pytest.raises(DatasetError, match="leave out --boxes"):
        save_scene_set(make_scene_set(1, size=32), tmp_path / "again")
        open_images(tmp_path / "again", boxes=tmp_path)


def test_problems_seen_only_in_the_pixels_fail_that_image(written):
    """Without a stated size a box outside the image is found when the image is read: that image fails (with
    the error naming it), the others are read."""
    def edit(d):
        for e in d["images"]:
            e.pop("width"), e.pop("height")
        d["images"][1]["objects"][0]["box"] = [30, 30, 60, 40]
        d["images"][2]["mask"] = "masks/bad.png"
    _edit(written, edit)
    from PIL import Image

    bad = np.zeros((48, 48), np.uint8)
    bad[:4, :4] = 9  # object number 9 of an image with fewer objects
    Image.fromarray(bad).save(written.parent / "masks" / "bad.png")
    data = open_images(written.parent)
    stream = ImageStream(data, Preprocess(48, (0.5,) * 3, (0.5,) * 3))
    assert stream[0]["error"] is None
    assert "images/scene_00001.png, object 0: box [30.0, 30.0, 60.0, 40.0] lies outside the 48x48 image" \
        in stream[1]["error"]
    assert "its mask 'masks/bad.png' holds object number 9 but the image has" in stream[2]["error"]
    Image.fromarray(bad[:40]).save(written.parent / "masks" / "bad.png")
    assert "its mask 'masks/bad.png' is 48x40 but the image is 48x48" in stream[2]["error"]
    stated = written.parent / "stated.json"
    doc = json.loads(written.read_text())
    doc["images"] = doc["images"][:1]
    doc["images"][0].update(width=50, height=48)
    stated.write_text(json.dumps(doc))
    item = ImageStream(open_images(stated), Preprocess(48, (0.5,) * 3, (0.5,) * 3))[0]
    assert "the image is 48x48 but its annotation says 50x48" in item["error"]
