"""Class labels as text: one parser for every place a label is written by hand (``--labels`` files, list files,
ImageFolder folder names, ``--folder-labels``): :func:`image_labels` reads an ``IMAGE,LABEL`` file,
:func:`parent_folder_labels` the class folders of an ImageFolder tree."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence


class LabelError(ValueError):
    """A label that names no class of the model."""


_SYNSET = re.compile(r"n\d{8}")


def _key(text: str) -> str:
    return " ".join(text.replace("_", " ").split()).lower()


def class_index(text: str, class_names: Sequence[str] = ()) -> int:
    """A label as a class index: an integer, or a class name (any of its comma-separated synonyms, any case,
    ``_`` for a space)."""
    text = text.strip()
    try:
        idx = int(text)
    except ValueError:
        idx = None
    if idx is not None:
        if idx < 0 or (class_names and idx >= len(class_names)):
            top = f" (0 to {len(class_names) - 1})" if class_names else ""
            raise LabelError(f"label {idx} is not a class index of this model{top}")
        return idx
    want = _key(text)
    if want:
        for i, name in enumerate(class_names):
            if _key(name) == want or want in (_key(s) for s in name.split(",")):
                return i
    if not class_names:
        raise LabelError(f"label {text!r} is not a class index, and the model has no class names to match it")
    import difflib

    synonyms = [s.strip() for n in class_names for s in n.split(",")]
    close = difflib.get_close_matches(text, synonyms, n=3)
    raise LabelError(f"label {text!r} is neither a class index nor a class name of this model"
                     + (f"; did you mean {', '.join(close)}?" if close else ""))


def folder_classes(folders: Sequence[str], class_names: Sequence[str] = ()) -> list[int]:
    """The class index of each ImageFolder class folder, by its name.

    A folder named by an integer is that class; with the model's ``class_names`` a folder must name one of
    them (or a synonym), and the complete ImageNet synset layout (one ``nXXXXXXXX`` folder per class) keeps
    ImageNet's sorted order. Without class names (a model that has none) the folders are numbered in sorted
    order, torchvision's ``ImageFolder`` convention. Anything else raises ``LabelError`` naming the folder.
    """
    folders = list(folders)
    if all(f.isdigit() for f in folders):
        return [class_index(f, class_names) for f in folders]
    if not class_names:
        return [sorted(folders).index(f) for f in folders]
    if all(_SYNSET.fullmatch(f) for f in folders):
        if len(folders) == len(class_names):
            return [sorted(folders).index(f) for f in folders]
        raise LabelError(f"class folder {folders[0]!r} is a WordNet id, and only the complete set of "
                         f"{len(class_names)} such folders has a known order; name the folders by class name or "
                         "index, or give --labels FILE")
    out = []
    for f in folders:
        try:
            out.append(class_index(f, class_names))
        except LabelError as e:
            raise LabelError(f"class folder {f!r}: {e}; name each class folder by a class name or index of "
                             "the model, or give --labels FILE") from None
    return out


def image_labels(path: str | Path, names: Sequence[str], class_names: Sequence[str] = ()) -> list[int | None]:
    """Each image's label from a file of ``IMAGE,LABEL`` lines (comma or tab; ``#`` starts a comment), IMAGE
    matched against the image's path, file name or stem; None for an image without a line. ``LabelError`` when
    the file cannot be read, a line is malformed, a label names no class, or no line names any image."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"--labels {path}: cannot read it: {e}") from None
    by_key: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        sep = "\t" if "\t" in line else ","
        image, _, label = line.rpartition(sep)
        if not image.strip() or not label.strip():
            raise LabelError(f"--labels {path}, line {lineno}: expected 'IMAGE,LABEL', got {line!r}")
        by_key[image.strip()] = class_index(label, class_names)
    labels: list[int | None] = []
    for name in names:
        p = Path(name)
        labels.append(next((by_key[k] for k in (name, p.name, p.stem) if k in by_key), None))
    if by_key and all(v is None for v in labels):
        shown = ", ".join(Path(n).name for n in names[:3])
        raise LabelError(f"--labels {path}: no line names any of the images ({shown}{', ...' if len(names) > 3 else ''})")
    return labels


def parent_folder_labels(names: Sequence[str], class_names: Sequence[str] = ()) -> list[int]:
    """Each image's label from the name of the folder holding it (the ImageFolder layout ``ROOT/CLASS/IMAGE``)."""
    return [class_index(Path(n).parent.name, class_names) for n in names]
