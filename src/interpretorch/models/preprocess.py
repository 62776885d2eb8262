"""Image loading and the preprocessing a model expects."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

ImageLike = Union[str, Path, np.ndarray, "PIL.Image.Image"]  # noqa: F821

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageLoadError(ValueError):
    """An image file could not be read."""


def load_image(source: ImageLike) -> np.ndarray:
    """Return an RGB uint8 (H, W, 3) array from a path, PIL image or array; unreadable files raise ImageLoadError."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            with Image.open(path) as im:
                im.load()
                return _rgb(im)
        except Image.DecompressionBombError as e:
            raise ImageLoadError(f"refusing image {str(path)!r}: {e}") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageLoadError(f"cannot read image {str(path)!r}: {e}") from e
    if isinstance(source, Image.Image):
        return _rgb(source)
    arr = np.asarray(source)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(f"expected an (H, W, 3) image array, got shape {arr.shape}")
    if arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        arr = np.clip(arr * 255.0 if arr.max() <= 1.0 else arr, 0, 255).astype(np.uint8)
    return arr


def _rgb(im: "PIL.Image.Image") -> np.ndarray:  # noqa: F821
    """RGB uint8 pixels of a PIL image; 16- and 32-bit grayscale are scaled to 8 bits, not saturated."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max() > 255) else 255.0
        if im.mode == "F":
            top = max(float(a.max()), 1.0) if a.max() > 1.0 else 1.0
        gray = np.clip(np.round(a / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image paths (folders are searched recursively)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {str(p)!r}")
    return out


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")


@dataclass(frozen=True)
class Preprocess:
    """Resize (shorter side, then centre crop) and normalise images the way a model was trained.

    ``resize``: the shorter side before the ``size`` x ``size`` centre crop (default ``size``: no margin; timm
    and torchvision crop a fraction, e.g. 256 -> 224); ``crop=False`` resizes straight to ``size`` x ``size`` (the
    Hugging Face ViT processors); ``interpolation``: nearest, bilinear, bicubic or lanczos.
    """

    size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    resize: int | None = None
    interpolation: str = "bicubic"
    crop: bool = True

    def with_size(self, size: int) -> "Preprocess":
        """The same preprocessing for another input size (the resize margin scaled with it)."""
        from dataclasses import replace

        resize = None if self.resize is None else max(size, round(self.resize * size / self.size))
        return replace(self, size=size, resize=resize)

    def display(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Return the resized, cropped images as (B, 3, size, size) floats in [0, 1] (what the model sees)."""
        from PIL import Image

        mode = self.interpolation.lower() if isinstance(self.interpolation, str) else "bicubic"
        if mode not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {INTERPOLATIONS}")
        resample = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                    "lanczos": Image.LANCZOS}[mode]
        side = max(self.size, self.resize or self.size)
        out = []
        for src in images:
            arr = load_image(src)
            im = Image.fromarray(arr)
            if not self.crop:
                im = im.resize((self.size, self.size), resample)
                out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0)
                continue
            w, h = im.size
            if self.resize is None:
                scale = side / min(w, h)
                nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
                im = im.resize((nw, nh), resample)
                left, top = (nw - self.size) // 2, (nh - self.size) // 2
            else:  # the libraries' Resize(side) + CenterCrop(size), rounded as torchvision rounds them
                nw, nh = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
                im = im.resize((nw, nh), resample)
                left, top = int(round((nw - self.size) / 2.0)), int(round((nh - self.size) / 2.0))
            im = im.crop((left, top, left + self.size, top + self.size))
            out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0)
        if not out:
            raise ValueError("no images given")
        return torch.stack(out)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] images to the model's input space."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Map model inputs back to [0, 1] images."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[:, None, None]
        return x * std + mean

    def __call__(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """Return model-ready (B, 3, size, size) tensors."""
        return self.normalize(self.display(images))
