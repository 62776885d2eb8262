"""Fingerprints of what a result depends on: a model's class and weights, a tensor's bytes."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

__all__ = ["tensor_bytes", "model_fingerprint"]


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The raw bytes of ``t`` (on the CPU, contiguous, bools as uint8), for hashing."""
    t = t.detach().to("cpu").contiguous().reshape(-1)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    return memoryview(t.view(torch.uint8).numpy())


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's class and every parameter and buffer (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\0".encode())
    for name, t in model.state_dict(keep_vars=False).items():
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()
