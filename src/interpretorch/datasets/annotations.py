"""The dataset annotation format: objects (boxes with labels, and optionally their pixel masks) of each image, in
one JSON file next to the images, so a detection or segmentation run on a whole dataset can score every map
against the objects' true locations.

``annotations.json`` (``--data FOLDER`` when the folder holds it, or ``--data FILE.json``)::

    {"format": "interpretorch-objects", "version": 1,
     "classes": ["disk", "square"],                            (optional: the names the labels use)
     "images": [{"file": "images/a.png",                        (relative to the file's folder, inside it)
                 "width": 64, "height": 64,                     (optional; checked against the image)
                 "mask": "masks/a.png",                         (optional: 8-bit PNG of the image's size,
                                                                 0 = no object, k = the k-th object, from 1)
                 "objects": [{"label": "disk", "box": [x0, y0, x1, y1]}, ...]}]}

A label is a class name (matched to the model's class names, synonyms and case ignored) or a class index of the
model. A box is in pixels of the stored image, ``x0 < x1``, ``y0 < y1``, end-exclusive (pixel ``(i, j)`` is in the
box when ``x0 <= j < x1`` and ``y0 <= i < y1``, torchvision's convention), and must lie inside the image.
``data.synthetic.save_scene_set`` writes a generated scene set in this format. Everything is checked when the
dataset is opened (a :class:`DatasetError` naming the file, the image and the object); what needs the image's
pixels (its size, the mask) is checked when the image is read, and an image that fails is reported as failed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from interpretorch.labels import LabelError, class_index

ANNOTATIONS_FILE = "annotations.json"
FORMAT = "interpretorch-objects"
VERSION = 1

__all__ = ["ANNOTATIONS_FILE", "FORMAT", "ImageObjects", "read_annotations", "find_annotations",
           "resolve_labels", "load_objects"]


class AnnotationError(ValueError):
    """An annotation file that cannot be used as given (``streams.DatasetError`` re-raises it as one)."""


@dataclass(frozen=True)
class ImageObjects:
    """The objects of one image: its file, (K, 4) boxes in its own pixels, K labels (names or indices), its
    instance mask file (or None) and the size the file states (or None)."""

    file: str
    boxes: np.ndarray
    labels: tuple[str | int, ...]
    mask: str | None = None
    width: int | None = None
    height: int | None = None

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


def find_annotations(path: Path) -> Path | None:
    """The annotation file of ``--data PATH``: PATH itself when it is a ``.json`` file, PATH/annotations.json when
    PATH is a folder holding one, else None."""
    if path.is_file() and path.suffix.lower() == ".json":
        return path
    if path.is_dir() and (path / ANNOTATIONS_FILE).is_file():
        return path / ANNOTATIONS_FILE
    return None


def _inside(root: Path, relative: Any, where: str) -> str:
    """``relative`` as a posix path inside ``root`` (which it must not leave), or an AnnotationError."""
    if not isinstance(relative, str) or not relative.strip():
        raise AnnotationError(f"{where}: expected a file path (a string), got {relative!r}")
    base = root.resolve()
    p = (base / relative).resolve()
    if base not in p.parents:
        raise AnnotationError(f"{where}: {relative!r} is outside the dataset folder {str(base)!r}")
    if not p.is_file():
        raise AnnotationError(f"{where}: no such file {relative!r}")
    return p.relative_to(base).as_posix()


def _size(entry: dict, key: str, where: str) -> int | None:
    v = entry.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise AnnotationError(f"{where}: {key} must be a positive number of pixels, got {v!r}")
    return v


def check_box(box: Sequence[float], width: int | None, height: int | None, where: str) -> None:
    """Refuse a box that is not ``x0 < x1``, ``y0 < y1`` inside a ``width`` x ``height`` image (when known)."""
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1):
        raise AnnotationError(f"{where}: box {list(box)} is empty or reversed; boxes are [x0, y0, x1, y1] with "
                              "x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or (width is not None and x1 > width) or (height is not None and y1 > height):
        size = f"the {width}x{height} image" if width is not None and height is not None else "the image"
        raise AnnotationError(f"{where}: box {list(box)} lies outside {size} (boxes are pixels of the stored "
                              "image, 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)")


def _objects(entry: dict, where: str, width: int | None, height: int | None) -> tuple[np.ndarray, tuple]:
    objs = entry.get("objects", [])
    if not isinstance(objs, list):
        raise AnnotationError(f"{where}: 'objects' must be a list of {{'label', 'box'}}, got {type(objs).__name__}")
    boxes, labels = [], []
    for k, o in enumerate(objs):
        at = f"{where}, object {k}"
        if not isinstance(o, dict) or "box" not in o or "label" not in o:
            raise AnnotationError(f"{at}: expected {{'label': name or index, 'box': [x0, y0, x1, y1]}}, got {o!r}")
        box = o["box"]
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
            raise AnnotationError(f"{at}: box must be 4 finite numbers [x0, y0, x1, y1], got {box!r}")
        check_box(box, width, height, at)
        label = o["label"]
        if isinstance(label, bool) or not isinstance(label, (int, str)) or (isinstance(label, int) and label < 0) \
                or (isinstance(label, str) and not label.strip()):
            raise AnnotationError(f"{at}: label must be a class name or a class index >= 0, got {label!r}")
        boxes.append([float(v) for v in box])
        labels.append(label)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4), tuple(labels)


def read_annotations(path: str | Path) -> tuple[Path, list[ImageObjects]]:
    """The folder the paths are relative to and every image's objects, from an annotation file, checked
    (format, paths inside the folder, files present, boxes, labels); an AnnotationError names what is wrong."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{str(p)!r}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{str(p)!r}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except OSError as e:
        raise AnnotationError(f"{str(p)!r}: cannot be read ({e.strerror or e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise AnnotationError(f"{str(p)!r}: not an annotation file (expected a JSON object with "
                              f"\"format\": \"{FORMAT}\"; see interpretorch.datasets.annotations)")
    if doc.get("version", VERSION) != VERSION:
        raise AnnotationError(f"{str(p)!r}: version {doc.get('version')!r} is not known; this reader knows {VERSION}")
    images = doc.get("images")
    if not isinstance(images, list) or not images:
        raise AnnotationError(f"{str(p)!r}: 'images' must be a non-empty list of image entries")
    root = p.parent
    out: list[ImageObjects] = []
    seen: set[str] = set()
    for n, entry in enumerate(images):
        where = f"{p.name}: images[{n}]"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object with 'file' and 'objects', got {entry!r}")
        rel = _inside(root, entry.get("file"), f"{where} file")
        where = f"{p.name}: {rel}"
        if rel in seen:
            raise AnnotationError(f"{where}: listed twice")
        seen.add(rel)
        width, height = _size(entry, "width", where), _size(entry, "height", where)
        boxes, labels = _objects(entry, where, width, height)
        mask = entry.get("mask")
        mask = None if mask is None else _inside(root, mask, f"{where} mask")
        out.append(ImageObjects(rel, boxes, labels, mask, width, height))
    return root, out


def resolve_labels(objects: Sequence[ImageObjects], class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """{file: each object's class index among the model's ``class_names``}; an AnnotationError names an object
    whose label is not one of the model's classes."""
    out: dict[str, tuple[int, ...]] = {}
    memo: dict[str | int, int] = {}
    for im in objects:
        got = []
        for k, lab in enumerate(im.labels):
            if lab not in memo:
                try:
                    memo[lab] = class_index(str(lab), class_names)
                except LabelError as e:
                    raise AnnotationError(f"{im.file}, object {k}: {e}") from None
            got.append(memo[lab])
        out[im.file] = tuple(got)
    return out


def load_objects(root: Path, im: ImageObjects, width: int, height: int, size: int,
                 crop: tuple[float, float, int, int]) -> dict[str, torch.Tensor]:
    """One image's objects in the preprocessed image (resized and centre-cropped by ``crop`` = (sx, sy, left,
    top) to ``size``): ``boxes`` (K, 4), clipped to the crop (an object cropped away keeps an empty box), and,
    with a mask file, ``instances`` (size, size) long (0 none, k the k-th object). Checks the stated size, the
    boxes and the mask against the image read (``width`` x ``height``)."""
    from PIL import Image

    if (im.width is not None and im.width != width) or (im.height is not None and im.height != height):
        raise AnnotationError(f"{im.file}: the image is {width}x{height} but its annotation says "
                              f"{im.width}x{im.height}")
    for k, box in enumerate(im.boxes.tolist()):
        check_box(box, width, height, f"{im.file}, object {k}")
    sx, sy, left, top = crop
    b = im.boxes.astype(np.float32).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]] * sx - left, 0, size)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]] * sy - top, 0, size)
    out = {"boxes": torch.from_numpy(b)}
    if im.mask is not None:
        path = root / im.mask
        try:
            with Image.open(path) as m:
                m.load()
                arr = np.asarray(m)
        except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
            raise AnnotationError(f"{im.file}: cannot read its mask {im.mask!r}: {e}") from None
        if arr.ndim != 2:
            raise AnnotationError(f"{im.file}: its mask {im.mask!r} must be a one-channel 8-bit PNG of object "
                                  f"numbers, got shape {arr.shape}")
        if arr.shape != (height, width):
            raise AnnotationError(f"{im.file}: its mask {im.mask!r} is {arr.shape[1]}x{arr.shape[0]} but the image "
                                  f"is {width}x{height}")
        if int(arr.max(initial=0)) > len(im):
            raise AnnotationError(f"{im.file}: its mask {im.mask!r} holds object number {int(arr.max())} but the "
                                  f"image has {len(im)} object(s)")
        nw, nh = round(width * sx), round(height * sy)
        big = np.asarray(Image.fromarray(arr.astype(np.uint8)).resize((nw, nh), Image.NEAREST))
        out["instances"] = torch.from_numpy(big[top:top + size, left:left + size].astype(np.int64))
    return out
