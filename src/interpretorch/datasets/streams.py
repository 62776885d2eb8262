"""Datasets as streams of images: a folder, an ImageFolder tree, a CSV / text list of files, with optional
labels, Pascal VOC boxes or mask PNGs matched by file name, or an annotation file of the images' objects
(``datasets.annotations``), read in batches through a ``DataLoader``.

Only the file list is held in memory; images (and their ground truth) are read when a batch needs them,
in ``DataLoader`` worker processes when asked. Every path in a list, and every ground-truth file, must stay
inside its folder. An image that cannot be read does not stop the run: its item carries the error, which
names the file, and the job records it as failed.
"""
from __future__ import annotations

import csv
import hashlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from interpretorch.datasets.annotations import (AnnotationError, ImageObjects, find_annotations, load_objects,
                                                read_annotations)
from interpretorch.models.preprocess import IMAGE_SUFFIXES, ImageLoadError, Preprocess, load_image
from interpretorch.labels import LabelError, class_index, folder_classes
from interpretorch.runstate import files_fingerprint

LIST_SUFFIXES = {".csv", ".txt", ".lst", ".tsv"}
MASK_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset that cannot be used as given (no images, a path outside its folder, a bad index line)."""


@dataclass(frozen=True)
class Record:
    """One image of a dataset: its position, its path relative to the dataset folder, its label if known."""

    index: int
    path: str
    label: int | None = None


@dataclass
class ImageSet:
    """A dataset's file list (not its pixels): where it lives, what kind it is and its images in order."""

    root: Path
    kind: str
    records: list[Record]
    classes: list[str] = field(default_factory=list)
    boxes: Path | None = None
    masks: Path | None = None
    source: str = ""
    annotations: dict[str, ImageObjects] | None = None  # each image's objects (an annotation file's datasets)
    annotation_file: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_labels(self) -> bool:
        """Whether every image has a label."""
        return bool(self.records) and all(r.label is not None for r in self.records)

    def fingerprint(self) -> str:
        """A hash of the image list and labels: the same data gives the same string."""
        h = hashlib.sha256()
        for r in self.records:
            h.update(f"{r.index}\t{r.path}\t{r.label}\n".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the data."""
        return {"path": self.source or str(self.root), "root": str(self.root), "kind": self.kind,
                "images": len(self.records), "labelled": self.has_labels, "classes": len(self.classes),
                "boxes": None if self.boxes is None else str(self.boxes),
                "masks": None if self.masks is None else str(self.masks), "sha256": self.fingerprint(),
                "annotations": None if self.annotation_file is None else str(self.annotation_file),
                "files_sha256": files_fingerprint([self.root / r.path for r in self.records] + self._truth_files(),
                                                  self.root)}

    def _truth_files(self) -> list[Path]:
        """The annotation file and the mask files of the images (their changes change the fingerprint)."""
        if self.annotations is None:
            return []
        masks = [self.annotations[r.path].mask for r in self.records]
        return [self.annotation_file] + [self.root / m for m in masks if m is not None]

    def subset(self, limit: int | None, seed: int = 0) -> "ImageSet":
        """A reproducible random subset of ``limit`` images (all when None or larger), kept in dataset order."""
        if limit is None or limit >= len(self.records):
            return self
        if limit < 1:
            raise DatasetError(f"--limit must be a positive number of images, got {limit}")
        keep = np.sort(np.random.default_rng(int(seed)).choice(len(self.records), size=limit, replace=False))
        return ImageSet(self.root, self.kind, [self.records[int(i)] for i in keep], self.classes, self.boxes,
                        self.masks, self.source, self.annotations, self.annotation_file)


def inside(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` resolved, or a DatasetError when it leaves ``root`` (``..``, an absolute path, a link)."""
    base = root.resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise DatasetError(f"{what}: {relative!r} is outside the dataset folder {str(base)!r}")
    return path


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES


def _parse_label(text: str, where: str, classes: dict[str, int] | None = None,
                 class_names: Sequence[str] = ()) -> int:
    t = text.strip()
    if classes and t in classes:
        return classes[t]
    try:
        return class_index(t, class_names)
    except LabelError as e:
        raise DatasetError(f"{where}: {e}") from None


def _read_list(path: Path) -> list[tuple[str, str | None, int]]:
    """(file, label text or None, line number) per row of a CSV / text list; a header row is skipped."""
    rows: list[tuple[str, str | None, int]] = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the list as UTF-8") from None
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.reader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        for n, row in enumerate(reader, 1):
            cells = [c.strip() for c in row]
            if not cells or not cells[0] or cells[0].startswith("#"):
                continue
            if n == 1 and cells[0].lower() in ("path", "file", "filename", "image", "name"):
                continue
            if len(cells) > 2:
                raise DatasetError(f"{path}:{n}: expected 'file' or 'file,label', got {len(cells)} columns")
            rows.append((cells[0], cells[1] if len(cells) == 2 and cells[1] else None, n))
    else:
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, tab, label = line.partition("\t")
            rows.append((name.strip(), label.strip() if tab and label.strip() else None, n))
    return rows


def read_labels(path: str | Path, classes: Sequence[str] = (), class_names: Sequence[str] = ()) -> dict[str, int]:
    """``{file or stem: label}`` from a labels file: CSV / tab rows ``file,label`` (a header row is skipped); a
    label is a class index, a class folder's name (``classes``) or a class name or synonym (``class_names``)."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"--labels {str(p)!r}: no such file")
    named = {c: i for i, c in enumerate(classes)}
    out: dict[str, int] = {}
    for name, label, n in _read_list(p):
        if label is None:
            raise DatasetError(f"{p}:{n}: expected 'file,label' (or file<TAB>label), got {name!r}")
        out[name] = _parse_label(label, f"{p}:{n}", named, class_names)
    if not out:
        raise DatasetError(f"--labels {str(p)!r} lists no labels")
    return out


def _class_folders(root: Path) -> list[Path] | None:
    """The class subfolders when ``root`` is an ImageFolder tree (only folders on top), else None."""
    entries = [e for e in root.iterdir() if not e.name.startswith(".")]
    dirs = sorted(e for e in entries if e.is_dir())
    if not dirs or any(_is_image(e) for e in entries):
        return None
    return dirs


def open_images(path: str | Path, *, labels: str | Path | None = None, boxes: str | Path | None = None,
                masks: str | Path | None = None, limit: int | None = None, seed: int = 0,
                class_names: Sequence[str] = ()) -> ImageSet:
    """Index a dataset: a folder of images, an ImageFolder tree (class subfolders), or a CSV / text list.

    An ImageFolder tree's class folders are named by class index or by one of the model's ``class_names`` (or
    a synonym; the complete ImageNet synset layout keeps its sorted order); a folder naming no class is refused.
    Without ``class_names`` (a model that has none) non-numeric folders are numbered in sorted order, as
    torchvision's ``ImageFolder`` does. Labels in a list or labels file resolve the same way. A list file's paths are
    relative to its folder and must stay inside it. ``labels`` (a ``file,label`` CSV, keyed by relative path
    or file stem) overrides the labels found; ``boxes`` (Pascal VOC XML) or ``masks`` (PNG) folders hold one
    file per image with the image's relative path or stem. ``limit`` picks a random subset seeded by ``seed``.
    """
    src = Path(path)
    if not src.exists():
        raise DatasetError(f"--data {str(src)!r}: no such file or folder")
    classes: list[str] = []
    annotated = find_annotations(src)
    if annotated is not None:
        return _open_annotated(src, annotated, labels, boxes, masks, limit, seed)
    if src.is_dir():
        root = src
        folders = _class_folders(src)
        if folders is not None:
            kind = "imagefolder"
            classes = [f.name for f in folders]
            try:
                indices = folder_classes(classes, class_names)
            except LabelError as e:
                raise DatasetError(f"--data {str(src)!r}: {e}") from None
            pairs = [(q, k) for k, f in zip(indices, folders)
                     for q in sorted(q for q in f.rglob("*") if _is_image(q))]
        else:
            kind = "folder"
            pairs = [(q, None) for q in sorted(q for q in src.rglob("*") if _is_image(q))]
        for q, _ in pairs:
            inside(root, str(q.relative_to(root)), f"--data {src}")  # a symlink out of the folder
        entries = [(q.relative_to(root).as_posix(), lab) for q, lab in pairs]
    elif src.suffix.lower() in LIST_SUFFIXES:
        root = src.parent
        kind = "list"
        entries = []
        for name, label, n in _read_list(src):
            p = inside(root, name, f"{src}:{n}")
            if not p.is_file():
                raise DatasetError(f"{src}:{n}: no such image {name!r}")
            entries.append((p.relative_to(root.resolve()).as_posix(),
                            None if label is None else _parse_label(label, f"{src}:{n}", None, class_names)))
    else:
        raise DatasetError(f"--data {str(src)!r} is neither a folder nor a list of images "
                           f"({', '.join(sorted(LIST_SUFFIXES))})")
    if not entries:
        raise DatasetError(f"--data {str(src)!r}: the dataset has no images "
                           f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if labels is not None:
        table = read_labels(labels, classes, class_names)
        relabelled = []
        for rel, _ in entries:
            lab = table.get(rel, table.get(Path(rel).name, table.get(Path(rel).stem)))
            relabelled.append((rel, lab))
        missing = [rel for rel, lab in relabelled if lab is None]
        if len(missing) == len(relabelled):
            raise DatasetError(f"--labels {str(labels)!r} names none of the dataset's images "
                               f"(first image: {relabelled[0][0]!r})")
        entries = relabelled
    gt = {}
    for flag, folder in (("--boxes", boxes), ("--masks", masks)):
        if folder is not None:
            if not Path(folder).is_dir():
                raise DatasetError(f"{flag} {str(folder)!r}: no such folder")
            gt[flag] = Path(folder)
    if len(gt) == 2:
        raise DatasetError("give --boxes or --masks, not both")
    records = [Record(i, rel, lab) for i, (rel, lab) in enumerate(entries)]
    data = ImageSet(root, kind, records, classes, gt.get("--boxes"), gt.get("--masks"), str(src))
    return data.subset(limit, seed)


def _open_annotated(src: Path, file: Path, labels: Any, boxes: Any, masks: Any, limit: int | None,
                    seed: int) -> ImageSet:
    """The images of an annotation file (``datasets.annotations``) with their objects."""
    given = [flag for flag, v in (("--labels", labels), ("--boxes", boxes), ("--masks", masks)) if v is not None]
    if given:
        raise DatasetError(f"--data {str(src)!r} has its objects in {file.name}; leave out {', '.join(given)}")
    try:
        root, objects = read_annotations(file)
    except AnnotationError as e:
        raise DatasetError(str(e)) from None
    bad = [o.file for o in objects if Path(o.file).suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise DatasetError(f"{file.name}: {bad[0]!r} is not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
    records = [Record(i, o.file) for i, o in enumerate(objects)]
    data = ImageSet(root, "annotated", records, source=str(src), annotations={o.file: o for o in objects},
                    annotation_file=file)
    return data.subset(limit, seed)


def find_truth(folder: Path, relative: str, suffixes: Sequence[str]) -> Path | None:
    """The ground-truth file of an image in ``folder``: same relative path or same stem, one of ``suffixes``."""
    rel = Path(relative)
    for base in (rel.with_suffix(""), Path(rel.stem)):
        for s in suffixes:
            p = inside(folder, str(base) + s, f"ground truth in {folder}")
            if p.is_file():
                return p
    return None


def read_voc_boxes(path: str | Path) -> np.ndarray:
    """The object boxes of a Pascal VOC XML file as (K, 4) float ``(x0, y0, x1, y1)``, 0-based, end-exclusive."""
    try:
        tree = ET.parse(path)
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"cannot read VOC boxes {str(path)!r}: {e}") from None
    out = []
    for obj in tree.getroot().iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise DatasetError(f"{str(path)!r}: an object's bndbox lacks xmin / ymin / xmax / ymax numbers") from None
        out.append((x0 - 1.0, y0 - 1.0, x1, y1))  # VOC: 1-based pixels, both ends inclusive
    return np.asarray(out, dtype=np.float32).reshape(-1, 4)


def crop_geometry(width: int, height: int, size: int) -> tuple[float, float, int, int]:
    """``Preprocess``'s resize and centre crop of a ``width`` x ``height`` image: (sx, sy, left, top)."""
    scale = size / min(width, height)
    nw, nh = max(size, round(width * scale)), max(size, round(height * scale))
    return nw / width, nh / height, (nw - size) // 2, (nh - size) // 2


def transform_boxes(boxes: np.ndarray, width: int, height: int, size: int) -> np.ndarray:
    """Boxes in original pixels -> boxes in the preprocessed (resized, centre-cropped) image; empty ones dropped."""
    sx, sy, left, top = crop_geometry(width, height, size)
    b = boxes.astype(np.float32).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]] * sx - left, 0, size)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]] * sy - top, 0, size)
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[keep]


def read_mask(path: Path, width: int, height: int, size: int) -> np.ndarray:
    """An object mask PNG (non-zero = object; 255 in a palette image is VOC's 'void' border, not object),
    resized and cropped like its image: (size, size) bool."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.size != (width, height):
                raise DatasetError(f"mask {str(path)!r} is {im.size[0]}x{im.size[1]} but its image is "
                                   f"{width}x{height}")
            arr = np.asarray(im)
            palette = im.mode == "P"
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - any decoding failure is the file's fault
        raise DatasetError(f"cannot read mask {str(path)!r}: {e}") from None
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    obj = (arr != 0) & ~((arr == 255) & palette)
    sx, sy, left, top = crop_geometry(width, height, size)
    nw, nh = round(width * sx), round(height * sy)
    big = np.asarray(Image.fromarray(obj.astype(np.uint8) * 255).resize((nw, nh), Image.NEAREST)) > 127
    return big[top:top + size, left:left + size]


class ImageStream(Dataset):
    """The images of an :class:`ImageSet` (or a part of it) as preprocessed items, for a ``DataLoader``."""

    def __init__(self, data: ImageSet, preprocess: Preprocess, records: Sequence[Record] | None = None) -> None:
        self.data = data
        self.preprocess = preprocess
        self.records = list(data.records if records is None else records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """``{"index", "path", "label", "image" (3, S, S) in [0, 1], "boxes" / "mask", "error"}``."""
        r = self.records[i]
        item: dict[str, Any] = {"index": r.index, "path": r.path, "label": -1 if r.label is None else r.label,
                                "error": None}
        size = self.preprocess.size
        try:
            arr = load_image(inside(self.data.root, r.path, "image"))
            h, w = arr.shape[:2]
            item["image"] = self.preprocess.display([arr])[0]
            if self.data.boxes is not None:
                f = find_truth(self.data.boxes, r.path, (".xml",))
                raw = read_voc_boxes(f) if f is not None else np.zeros((0, 4), np.float32)
                item["boxes"] = torch.from_numpy(transform_boxes(raw, w, h, size))
            if self.data.masks is not None:
                f = find_truth(self.data.masks, r.path, MASK_SUFFIXES)
                m = read_mask(f, w, h, size) if f is not None else np.zeros((size, size), bool)
                item["mask"] = torch.from_numpy(m.copy())
            if self.data.annotations is not None:
                item["objects"] = load_objects(self.data.root, self.data.annotations[r.path], w, h, size,
                                               crop_geometry(w, h, size))
        except (ImageLoadError, DatasetError, AnnotationError) as e:
            item["error"] = str(e)
        if item["error"] is not None:
            item["image"] = torch.zeros(3, size, size)
            item.pop("boxes", None)
            item.pop("mask", None)
            if self.data.boxes is not None:
                item["boxes"] = torch.zeros(0, 4)
            if self.data.masks is not None:
                item["mask"] = torch.zeros(size, size, dtype=torch.bool)
            if self.data.annotations is not None:
                item["objects"] = {"boxes": torch.zeros(0, 4)}
        return item


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack a batch of items; boxes stay a list (a different number per image)."""
    out: dict[str, Any] = {"index": [it["index"] for it in items], "path": [it["path"] for it in items],
                           "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
                           "error": [it["error"] for it in items],
                           "image": torch.stack([it["image"] for it in items])}
    if "boxes" in items[0]:
        out["boxes"] = [it["boxes"] for it in items]
    if "mask" in items[0]:
        out["mask"] = torch.stack([it["mask"] for it in items])
    if "objects" in items[0]:
        out["objects"] = [it["objects"] for it in items]
    return out


def loader(data: ImageSet, preprocess: Preprocess, records: Sequence[Record], batch_size: int,
           workers: int = 0) -> DataLoader:
    """A ``DataLoader`` over ``records`` of ``data`` in order, ``batch_size`` images per batch."""
    return DataLoader(ImageStream(data, preprocess, records), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=collate, persistent_workers=False)
