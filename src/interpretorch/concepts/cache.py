"""Layer activations of image sets, computed once per (model, layer, images) and cached on disk.

An entry's key is a SHA-256 over everything its value depends on: every parameter and buffer of the model
(names, dtypes, shapes and bytes), the model's class, the layer name, and the images - either the bytes of
the model-ready tensor, or the bytes of the image files together with the preprocessing that turns them into
model inputs. A changed weight, layer, image or preprocessing gives a different key, so a stale entry is never
served. Entries are written atomically (temporary file, then rename) and read with ``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from torch import nn

from interpretorch.capture import capture
from interpretorch.core import chunks, model_device, rows_per_pass
from interpretorch.core.fingerprint import model_fingerprint, tensor_bytes
from interpretorch.models.layers import get_layer

Images = Union[torch.Tensor, Sequence[Union[str, Path]]]

_CHUNK = 1 << 20


def images_fingerprint(images: Images, preprocess: object | None = None) -> str:
    """SHA-256 of a model-ready tensor's bytes, or of image files' bytes plus ``repr(preprocess)``."""
    h = hashlib.sha256()
    if isinstance(images, torch.Tensor):
        h.update(f"tensor\0{images.dtype}\0{tuple(images.shape)}\0".encode())
        h.update(tensor_bytes(images))
        return h.hexdigest()
    if preprocess is None:
        raise ValueError("image files need the preprocessing that turns them into model inputs (preprocess=...)")
    h.update(f"files\0{preprocess!r}\0{len(images)}\0".encode())
    for p in images:
        with open(p, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        h.update(b"\0file-end\0")
    return h.hexdigest()


def compute_activations(model: nn.Module, inputs: torch.Tensor, layers: Sequence[str], *,
                        batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Activations of ``inputs`` at ``layers`` (one batched no-grad forward per chunk), on the model's device."""
    if inputs.dim() != 4 or inputs.shape[0] == 0:
        raise ValueError(f"expected a non-empty (B, C, H, W) batch of images, got shape {tuple(inputs.shape)}")
    device = model_device(model)
    bs = rows_per_pass(batch_size, device)
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with capture(model, list(layers), grad=False) as rec, torch.no_grad():
        for sl in chunks(inputs.shape[0], bs):
            rec.activations.clear()
            rec.calls.clear()
            model(inputs[sl].to(device))
            for n in layers:
                parts[n].append(rec[n])
    return {n: torch.cat(v) for n, v in parts.items()}


class ActivationCache:
    """Disk cache of layer activations keyed by (model weights, layer, images, preprocessing).

    ``root=None`` keeps nothing on disk (every request computes). ``hits`` and ``misses`` count layer entries
    served from and written to disk since the cache was made.
    """

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def key(self, model_fp: str, layer: str, images_fp: str) -> str:
        """The entry name for one (model, layer, images) triple."""
        return hashlib.sha256(f"{model_fp}\0{layer}\0{images_fp}".encode()).hexdigest()

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / f"{key}.pt"

    def _load(self, key: str) -> torch.Tensor | None:
        if self.root is None:
            return None
        path = self._path(key)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a truncated or foreign file is a miss, never an answer
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("acts"), torch.Tensor):
            return None
        return entry["acts"]

    def _store(self, key: str, acts: torch.Tensor) -> None:
        if self.root is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"key": key, "acts": acts.detach().to("cpu")}, tmp)
            os.replace(tmp, self._path(key))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def activations(self, model: nn.Module, layers: Sequence[str] | str, images: Images, *,
                    preprocess: Callable | None = None, batch_size: int | None = None,
                    model_fp: str | None = None) -> dict[str, torch.Tensor]:
        """Activations of ``images`` at each layer: from disk when cached, else one forward for the missing layers.

        ``images`` is a model-ready (B, C, H, W) tensor, or image paths that ``preprocess`` turns into one (then
        the files are only decoded on a miss). Returns {layer: (B, ...)} on the model's device.
        """
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise ValueError("no layers given")
        for n in layers:
            get_layer(model, n)
        if not isinstance(images, torch.Tensor):
            images = [Path(p) for p in images]
            if not images:
                raise ValueError("empty image set: no image files given")
        fp_model = model_fp or model_fingerprint(model)
        fp_images = images_fingerprint(images, preprocess)
        device = model_device(model)
        out: dict[str, torch.Tensor] = {}
        missing = []
        for n in layers:
            acts = self._load(self.key(fp_model, n, fp_images))
            if acts is None:
                missing.append(n)
            else:
                self.hits += 1
                out[n] = acts.to(device)
        if missing:
            x = images if isinstance(images, torch.Tensor) else preprocess(images)
            fresh = compute_activations(model, x, missing, batch_size=batch_size)
            for n, acts in fresh.items():
                self.misses += 1
                self._store(self.key(fp_model, n, fp_images), acts)
                out[n] = acts
        return {n: out[n] for n in layers}
