"""Read a Broden-format probe dataset: index.csv, category.csv, label.csv, c_<category>.csv and the images/.

Layout (as the Broden dataset of Bau et al. 2017)::

    DIR/index.csv        image, split, ih, iw, sh, sw, <category>, <category>, ...
    DIR/category.csv     name, first, last, count, frequency        (only ``name`` is required)
    DIR/label.csv        number, name, category, frequency, ...     (``category`` like ``object(12);part(3)``)
    DIR/c_<category>.csv code, number, name, ...                    (category-local code -> global label number)
    DIR/images/...       images and masks; the paths in index.csv are relative to DIR/images

In a category cell several entries are separated by ``;``. An integer is an image-level label (it covers the
whole image); anything else is the file name of a pixel mask, an RGB PNG whose label at each pixel is
``R + 256 * G`` (0 = unlabelled). Masks have the size ``sh x sw`` given in the row.

Every path is checked to stay inside the dataset folder (no ``..``, no absolute path, no symlink pointing
out); a malformed row is reported with its line number, a missing file by its name.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BrodenError(ValueError):
    """A Broden-format dataset is malformed, incomplete, or points outside its folder."""


class UnreadableImage(BrodenError):
    """One image file cannot be decoded (corrupt, truncated, a decompression bomb): dissection skips it."""


@dataclass(frozen=True)
class Row:
    """One line of index.csv: the image, its sizes, and per category its pixel masks and image-level labels."""

    line: int
    image: str
    split: str
    ih: int
    iw: int
    sh: int
    sw: int
    masks: tuple[tuple[int, str], ...]      # (category index, mask file)
    image_path: Path | None = None          # resolved, checked to lie inside the dataset
    mask_paths: tuple[Path, ...] = ()
    labels: tuple[tuple[int, int], ...] = ()  # (category index, global label number) image-level
    categories: tuple[int, ...] = ()          # categories with any entry in this row


@dataclass
class Broden:
    """The tables of a Broden-format dataset: categories, labels (global numbers), and the index rows."""

    root: Path
    categories: list[str]
    label_names: dict[int, str]
    label_category: dict[int, int]          # global label number -> primary category index
    rows: list[Row] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        """One more than the largest global label number (label 0 is 'unlabelled')."""
        return max(self.label_names, default=0) + 1


def _utf8_text(path: Path) -> io.StringIO:
    """The text of a CSV table, or a BrodenError naming the file when it is not UTF-8."""
    try:
        return io.StringIO(path.read_text(encoding="utf-8"), newline="")
    except UnicodeDecodeError as e:
        raise BrodenError(f"{path.name}: not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None


def _open_table(root: Path, name: str) -> list[tuple[int, dict[str, str]]]:
    path = root / name
    if not path.is_file():
        raise BrodenError(f"missing file {str(path)!r} (a Broden dataset needs index.csv, category.csv, label.csv)")
    _inside(root, path, name)
    with _utf8_text(path) as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise BrodenError(f"{name} is empty (no header line)") from None
        header = [h.strip() for h in header]
        rows = []
        for rec in reader:
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise BrodenError(f"{name} line {reader.line_num}: {len(rec)} fields, the header has {len(header)}")
            rows.append((reader.line_num, dict(zip(header, (c.strip() for c in rec)))))
    return [(0, {"__header__": ",".join(header)})] + rows


def _inside(root: Path, path: Path, what: str) -> Path:
    """Return ``path`` resolved, or raise if it (or a symlink on the way) leaves ``root``."""
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise BrodenError(f"{what}: path {str(path)!r} leaves the dataset folder {str(root)!r}")
    return real


def safe_path(root: Path, relative: str, where: str) -> Path:
    """Return ``root/images/relative`` after checking it is relative, has no '..', and resolves inside ``root``."""
    if not relative:
        raise BrodenError(f"{where}: empty file name")
    p = Path(relative)
    if p.is_absolute() or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise BrodenError(f"{where}: absolute path {relative!r} is not allowed; paths are relative to images/")
    if ".." in p.parts or ".." in Path(relative.replace("\\", "/")).parts:
        raise BrodenError(f"{where}: path {relative!r} contains '..' and would leave the dataset folder")
    return _inside(root, root / "images" / p, where)


def _int(text: str, what: str, where: str, minimum: int = 0) -> int:
    try:
        v = int(text)
    except ValueError:
        raise BrodenError(f"{where}: {what} must be an integer, got {text!r}") from None
    if v < minimum:
        raise BrodenError(f"{where}: {what} must be >= {minimum}, got {v}")
    return v


def _primary_category(text: str, categories: list[str], where: str) -> int:
    """``object(12);part(3)`` -> index of the category with the largest count (the first when no counts)."""
    best, best_count = None, -1
    for part in (p.strip() for p in text.split(";") if p.strip()):
        name, _, rest = part.partition("(")
        name = name.strip()
        count = 0
        if rest:
            count = _int(rest.rstrip(")"), "category count", where)
        if name not in categories:
            raise BrodenError(f"{where}: category {name!r} is not in category.csv ({', '.join(categories)})")
        if count > best_count:
            best, best_count = categories.index(name), count
    if best is None:
        raise BrodenError(f"{where}: no category given")
    return best


def read_broden(root: str | Path, split: str | None = None) -> Broden:
    """Parse and check the tables of the Broden-format dataset in ``root`` (rows of ``split`` only, if given)."""
    root = Path(root)
    if not root.is_dir():
        raise BrodenError(f"dataset folder {str(root)!r} does not exist")
    cat_rows = _open_table(root, "category.csv")
    if "name" not in cat_rows[0][1]["__header__"].split(","):
        raise BrodenError("category.csv has no 'name' column")
    categories = [r["name"] for _, r in cat_rows[1:]]
    if not categories or len(set(categories)) != len(categories):
        raise BrodenError(f"category.csv must list distinct categories, got {categories}")

    lab_rows = _open_table(root, "label.csv")
    header = lab_rows[0][1]["__header__"].split(",")
    for col in ("number", "name", "category"):
        if col not in header:
            raise BrodenError(f"label.csv has no {col!r} column (columns: {', '.join(header)})")
    names: dict[int, str] = {}
    label_cat: dict[int, int] = {}
    for line, r in lab_rows[1:]:
        where = f"label.csv line {line}"
        num = _int(r["number"], "number", where)
        if num in names:
            raise BrodenError(f"{where}: label number {num} appears twice")
        names[num] = r["name"]
        if num == 0:  # '-' : unlabelled
            continue
        label_cat[num] = _primary_category(r["category"], categories, where)

    for ci, cat in enumerate(categories):  # c_<category>.csv: optional, but checked when present
        path = root / f"c_{cat}.csv"
        if not path.exists():
            continue
        for line, r in _open_table(root, f"c_{cat}.csv")[1:]:
            where = f"c_{cat}.csv line {line}"
            if "number" not in r:
                raise BrodenError(f"c_{cat}.csv has no 'number' column")
            num = _int(r["number"], "number", where)
            if num and num not in names:
                raise BrodenError(f"{where}: label number {num} is not in label.csv")

    path = root / "index.csv"
    if not path.is_file():
        raise BrodenError(f"missing file {str(path)!r}")
    _inside(root, path, "index.csv")
    rows: list[Row] = []
    with _utf8_text(path) as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise BrodenError("index.csv is empty (no header line)") from None
        if tuple(header[:6]) != INDEX_COLUMNS:
            raise BrodenError(f"index.csv line 1: the header must start with {', '.join(INDEX_COLUMNS)}, "
                              f"got {', '.join(header[:6])}")
        cols = header[6:]
        unknown = [c for c in cols if c not in categories]
        if unknown:
            raise BrodenError(f"index.csv line 1: column(s) {', '.join(unknown)} are not categories in category.csv")
        col_cat = [categories.index(c) for c in cols]
        for rec in reader:
            line = reader.line_num
            if not rec or all(not c.strip() for c in rec):
                continue
            where = f"index.csv line {line}"
            if len(rec) != len(header):
                raise BrodenError(f"{where}: {len(rec)} fields, the header has {len(header)}")
            rec = [c.strip() for c in rec]
            ih, iw, sh, sw = (_int(v, n, where, 1) for v, n in zip(rec[2:6], INDEX_COLUMNS[2:]))
            masks, labels, present, paths = [], [], [], []
            for ci, cell in zip(col_cat, rec[6:]):
                entries = [e.strip() for e in cell.split(";") if e.strip()]
                if entries:
                    present.append(ci)
                for e in entries:
                    if e.lstrip("-").isdigit():
                        num = int(e)
                        if num not in label_cat:
                            raise BrodenError(f"{where}: image-level label {num} in column {categories[ci]!r} "
                                              "is not a label in label.csv")
                        labels.append((ci, num))
                    else:
                        paths.append(safe_path(root, e, where))
                        masks.append((ci, e))
            image_path = safe_path(root, rec[0], where)
            if split is None or rec[1] == split:
                rows.append(Row(line, rec[0], rec[1], ih, iw, sh, sw, tuple(masks), image_path, tuple(paths),
                                tuple(labels), tuple(sorted(set(present)))))
    if not rows:
        raise BrodenError(f"index.csv has no images{'' if split is None else f' in split {split!r}'}")
    return Broden(root, categories, names, label_cat, rows)


def decode_mask(path: Path, where: str) -> np.ndarray:
    """Read a mask PNG and return its labels ``R + 256 * G`` as an int64 (H, W) array."""
    from PIL import Image

    if not path.is_file():
        raise BrodenError(f"{where}: missing mask file {str(path)!r}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("L", "I", "I;16", "P"):
                arr = np.asarray(im if im.mode != "P" else im.convert("RGB"))
                if arr.ndim == 2:
                    return arr.astype(np.int64)
            arr = np.asarray(im.convert("RGB")).astype(np.int64)
    except Image.DecompressionBombError as e:
        raise BrodenError(f"{where}: refusing mask file {str(path)!r}: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # UnidentifiedImageError is an OSError
        raise BrodenError(f"{where}: cannot read mask file {str(path)!r}: {e}") from None
    return arr[..., 0] + 256 * arr[..., 1]


def encode_mask(labels: np.ndarray) -> np.ndarray:
    """Return the (H, W, 3) uint8 RGB encoding of integer labels (R = low byte, G = high byte)."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= 65536:
        raise ValueError("mask labels must lie in [0, 65535]")
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    out[..., 0] = labels % 256
    out[..., 1] = labels // 256
    return out


class BrodenDataset(Dataset):
    """A Broden-format dataset as a torch Dataset of normalised images and their label masks.

    Item ``i`` is a dict: ``image`` (3, H, W) float normalised with ``mean`` / ``std`` (stored size, or
    ``size x size`` when given); ``pixel`` (M, sh, sw) long, one layer per mask file (0 = unlabelled);
    ``image_labels`` (K,) long global label numbers that cover the whole image; ``categories`` (C,) bool,
    the categories this image carries a label of; ``index`` the item's position; ``error`` None, or why the
    image file could not be decoded (``image`` is then zeros). With ``labels=False`` the
    masks are not read (``pixel`` has no layers), for passes that need only the images.
    """

    def __init__(self, root: str | Path, *, split: str | None = None, size: int | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 labels: bool = True) -> None:
        self.info = read_broden(root, split)
        self.root = self.info.root
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        if (self.std <= 0).any():
            raise ValueError(f"std must be positive, got {tuple(std)}")
        self.labels = labels
        self.images = True  # False: items carry no image (a pass that needs only the labels)
        self._known = np.zeros(self.info.num_labels, dtype=bool)
        self._known[[0] + list(self.info.label_category)] = True
        first = self.info.rows[0]
        if size is None:
            odd = [r for r in self.info.rows if (r.ih, r.iw) != (first.ih, first.iw)]
            if odd:
                raise BrodenError(f"index.csv line {odd[0].line}: image size {odd[0].ih}x{odd[0].iw} differs from "
                                  f"{first.ih}x{first.iw} (line {first.line}); give size= to resize all images")
        odd = [r for r in self.info.rows if (r.sh, r.sw) != (first.sh, first.sw)]
        if odd:
            raise BrodenError(f"index.csv line {odd[0].line}: mask size {odd[0].sh}x{odd[0].sw} differs from "
                              f"{first.sh}x{first.sw} (line {first.line}); all masks must have one size")

    @property
    def categories(self) -> list[str]:
        """Category names in column order of the label tallies."""
        return self.info.categories

    @property
    def mask_size(self) -> tuple[int, int]:
        """(sh, sw): the resolution at which activations are compared with the masks."""
        r = self.info.rows[0]
        return r.sh, r.sw

    def __len__(self) -> int:
        return len(self.info.rows)

    def load_image(self, i: int) -> np.ndarray:
        """Return image ``i`` as stored (or resized) as an RGB uint8 (H, W, 3) array, read as ``explain`` reads
        images (16-bit files rescaled, not saturated); an undecodable file raises :class:`UnreadableImage`."""
        from PIL import Image

        from interpretorch.models.preprocess import ImageLoadError, load_image

        row = self.info.rows[i]
        path = row.image_path
        if not path.is_file():
            raise BrodenError(f"index.csv line {row.line}: missing image file {str(path)!r}")
        try:
            arr = load_image(path)
        except ImageLoadError as e:
            raise UnreadableImage(f"index.csv line {row.line}: {e}") from None
        if self.size is not None:
            arr = np.asarray(Image.fromarray(arr).resize((self.size, self.size), Image.BILINEAR))
        if self.size is None and arr.shape[:2] != (row.ih, row.iw):
            raise BrodenError(f"index.csv line {row.line}: image {row.image!r} is {arr.shape[0]}x{arr.shape[1]}, "
                              f"the index says {row.ih}x{row.iw}")
        return arr

    def __getitem__(self, i: int) -> dict:
        row = self.info.rows[i]
        error = None
        if self.images:
            try:
                arr = self.load_image(i)
                image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
                image = (image - self.mean) / self.std
            except UnreadableImage as e:  # skipped by dissect(), named on stderr
                error = str(e)
                h, w = (self.size, self.size) if self.size is not None else (row.ih, row.iw)
                image = torch.zeros((3, h, w))
        else:
            image = torch.zeros(0)
        layers = []
        if self.labels:
            for (_ci, name), path in zip(row.masks, row.mask_paths):
                where = f"index.csv line {row.line}"
                m = decode_mask(path, where)
                if m.shape != (row.sh, row.sw):
                    raise BrodenError(f"{where}: mask {name!r} is {m.shape[0]}x{m.shape[1]}, "
                                      f"the index says {row.sh}x{row.sw}")
                counts = np.bincount(m.ravel(), minlength=self._known.size)
                known = np.concatenate([self._known, np.zeros(counts.size - self._known.size, dtype=bool)])
                bad = np.nonzero((counts > 0) & ~known)[0]
                if bad.size:
                    raise BrodenError(f"{where}: mask {name!r} holds label {int(bad[0])}, not a label in label.csv")
                layers.append(torch.from_numpy(m))
        pixel = torch.stack(layers) if layers else torch.zeros((0, row.sh, row.sw), dtype=torch.long)
        cats = torch.zeros(len(self.info.categories), dtype=torch.bool)
        cats[list(row.categories)] = True
        return {"image": image, "pixel": pixel, "image_labels": torch.tensor([n for _, n in row.labels],
                                                                            dtype=torch.long).view(-1),
                "categories": cats, "index": i, "error": error}


def collate(items: list[dict]) -> dict:
    """Stack a list of BrodenDataset items, padding mask layers with 0 and image labels with -1."""
    images = torch.stack([it["image"] for it in items])
    m = max(it["pixel"].shape[0] for it in items)
    sh, sw = items[0]["pixel"].shape[-2:]
    pixel = torch.zeros((len(items), m, sh, sw), dtype=torch.long)
    for b, it in enumerate(items):
        pixel[b, :it["pixel"].shape[0]] = it["pixel"]
    k = max(it["image_labels"].numel() for it in items)
    labels = torch.full((len(items), k), -1, dtype=torch.long)
    for b, it in enumerate(items):
        labels[b, :it["image_labels"].numel()] = it["image_labels"]
    return {"image": images, "pixel": pixel, "image_labels": labels,
            "categories": torch.stack([it["categories"] for it in items]),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "error": [it.get("error") for it in items]}

