"""Rotated representations (Bau et al. 2017, section 3.2): is interpretability axis-aligned?

The paper rotates a layer's representation by a random orthogonal matrix ``Q`` and undoes the rotation above the
layer, so the network computes the same function while its units become mixtures of the old ones; it then
dissects the rotated units, with ``Q^alpha`` interpolating from the identity (``alpha = 0``) to ``Q``
(``alpha = 1``). A drop in detectors as ``alpha`` grows says the representation's axes, not only its space,
carry the concepts.

- :func:`random_rotation` draws ``Q`` from the Haar measure on the rotations SO(n) (seeded);
- :func:`rotation_power` gives ``Q^alpha`` through the real Schur form of ``Q`` (each 2 x 2 rotation block turns
  by ``alpha`` times its angle), orthogonal at every ``alpha``;
- :func:`rotate_layers` returns a copy of a model where each named layer's output is rotated (recorded at
  ``"<layer>.rotated"``) and un-rotated before anything above reads it; the caller's model is not changed.
"""
from __future__ import annotations

import copy
import math
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from interpretorch.core.seeding import seed_for
from interpretorch.models.layers import get_layer

ROTATED = "rotated"  # the child of a rotated layer whose output is the rotated representation


def random_rotation(n: int, seed: int = 0) -> torch.Tensor:
    """A Haar-random rotation (orthogonal, determinant +1) of size (n, n), float64, from ``seed``."""
    if n < 1:
        raise ValueError(f"a rotation needs n >= 1, got {n}")
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)  # Haar: unique QR signs
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]  # stay in SO(n), where the identity connects to Q through rotations
    return q


def layer_seed(seed: int, layer: str) -> int:
    """The seed of a layer's rotation: one stream per (seed, layer name), independent of the other layers."""
    return seed_for(seed, zlib.crc32(layer.encode()))


def rotation_power(q: torch.Tensor, alpha: float) -> torch.Tensor:
    """``Q^alpha`` of a rotation ``Q`` (float64): the identity at 0, ``Q`` at 1, a rotation at every alpha.

    With the real Schur form ``Q = Z T Z^T`` (``T`` block diagonal: 2 x 2 rotations by angles theta, and +-1),
    ``Q^alpha = Z T^alpha Z^T`` where each block turns by ``alpha * theta``; eigenvalues -1 (even in number in
    SO(n)) are paired into rotations by pi.
    """
    from scipy.linalg import schur

    q = torch.as_tensor(q, dtype=torch.float64)
    if q.dim() != 2 or q.shape[0] != q.shape[1]:
        raise ValueError(f"a rotation is a square matrix, got shape {tuple(q.shape)}")
    n = q.shape[0]
    if not torch.allclose(q @ q.T, torch.eye(n, dtype=torch.float64), atol=1e-8):
        raise ValueError("the matrix is not orthogonal")
    if torch.linalg.det(q) < 0:
        raise ValueError("the matrix has determinant -1: no path of rotations joins it to the identity")
    alpha = float(alpha)
    if alpha == 0.0:
        return torch.eye(n, dtype=torch.float64)
    if alpha == 1.0:
        return q.clone()
    t, z = schur(q.numpy(), output="real")
    power = np.zeros((n, n))
    minus: list[int] = []
    i = 0
    while i < n:
        if i + 1 < n and abs(t[i + 1, i]) > 1e-12:  # a 2 x 2 rotation block
            theta = math.atan2(t[i + 1, i], t[i, i])
            c, s = math.cos(alpha * theta), math.sin(alpha * theta)
            power[i:i + 2, i:i + 2] = [[c, -s], [s, c]]
            i += 2
        else:
            if t[i, i] > 0:
                power[i, i] = 1.0
            else:
                minus.append(i)
            i += 1
    if len(minus) % 2:
        raise ValueError("the matrix has an odd number of eigenvalues -1")
    c, s = math.cos(alpha * math.pi), math.sin(alpha * math.pi)
    for a, b in zip(minus[::2], minus[1::2]):
        power[a, a], power[a, b], power[b, a], power[b, b] = c, -s, s, c
    return torch.from_numpy(z @ power @ z.T)


class Rotate(nn.Module):
    """Multiply the channels (dimension 1) of a tensor by a fixed matrix: ``y[:, i] = sum_j M[i, j] x[:, j]``."""

    def __init__(self, matrix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix.detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The channel-rotated tensor."""
        if x.dim() < 2 or x.shape[1] != self.matrix.shape[0]:
            raise ValueError(f"the rotation is for {self.matrix.shape[0]} channels; the layer gives shape "
                             f"{tuple(x.shape)}")
        m = self.matrix.to(device=x.device, dtype=x.dtype)
        return torch.einsum("ij,bj...->bi...", m, x)


class RotatedLayer(nn.Module):
    """A layer whose output is rotated (child ``rotated``) and rotated back (child ``unrotated``) before it leaves."""

    def __init__(self, inner: nn.Module, q: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.rotated = Rotate(q)
        self.unrotated = Rotate(q.T)

    def forward(self, *args, **kwargs):
        """The inner layer's output, through the rotation and its inverse (the same function up to rounding)."""
        return self.unrotated(self.rotated(self.inner(*args, **kwargs)))


def rotate_layers(model: nn.Module, rotations: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` where each layer named in ``rotations`` has its output multiplied by its matrix
    (recorded at ``"<layer>.rotated"``) and by the transpose right after, so the copy computes the same function.

    The matrices must be orthogonal (checked); ``model`` itself is not changed.
    """
    for name, q in rotations.items():
        get_layer(model, name)  # a clear error for a missing layer before anything is copied
        q = torch.as_tensor(q)
        n = q.shape[0] if q.dim() == 2 else -1
        if q.dim() != 2 or q.shape[0] != q.shape[1] or not torch.allclose(
                q.double() @ q.double().T, torch.eye(n, dtype=torch.float64), atol=1e-6):
            raise ValueError(f"the rotation for layer {name!r} is not an orthogonal matrix")
    if len({n for n in rotations}) != len(rotations):
        raise ValueError("a layer is named twice")
    for a in rotations:
        for b in rotations:
            if a != b and b.startswith(a + "."):
                raise ValueError(f"layer {b!r} lies inside layer {a!r}; rotate one of them")
    out = copy.deepcopy(model)
    for name, q in rotations.items():
        parent_name, _, child = name.rpartition(".")
        parent = get_layer(out, parent_name) if parent_name else out
        inner = parent._modules[child]
        parent._modules[child] = RotatedLayer(inner, torch.as_tensor(q, dtype=torch.float32))
    return out


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, refused (ValueError) unless finite and in [0, 1] (the paper's interpolation)."""
    alpha = float(alpha)
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ValueError(f"alpha must lie in [0, 1] (0: the layer as it is, 1: a full random rotation), got {alpha}")
    return alpha


def layer_channels(model: nn.Module, dataset, layers: list[str]) -> dict[str, int]:
    """The channel count of each layer's (B, C, H, W) output on the dataset's first image."""
    from interpretorch.capture import capture
    from interpretorch.core import model_device

    for name in layers:
        get_layer(model, name)
    images_only = copy.copy(dataset)
    images_only.labels = False
    image = images_only[0]["image"][None]
    with capture(model, layers, grad=False) as rec, torch.no_grad():
        model(image.to(model_device(model)))
        out = {}
        for name in layers:
            a = rec[name]
            if a.dim() != 4:
                raise ValueError(f"layer {name!r} gives activations of shape {tuple(a.shape)}; dissection needs "
                                 "(B, C, H, W) feature maps")
            out[name] = int(a.shape[1])
    return out


def rotated_site(layer: str) -> str:
    """The module name in a :func:`rotate_layers` copy whose output is ``layer``'s rotated representation."""
    return f"{layer}.{ROTATED}"


def rotated_copy(model: nn.Module, dataset, layers, alpha: float, seed: int = 0) -> nn.Module:
    """The :func:`rotate_layers` copy of ``model`` with each of ``layers`` rotated by ``Q^alpha`` (``Q`` drawn from
    ``seed`` and the layer's name, sized by the layer's channels on the dataset's first image)."""
    from interpretorch.dissect.broden import BrodenDataset

    if isinstance(dataset, (str, Path)):
        dataset = BrodenDataset(dataset)
    names = [layers] if isinstance(layers, str) else list(layers)
    alpha = check_alpha(alpha)
    rotations = {n: rotation_power(random_rotation(c, layer_seed(seed, n)), alpha)
                 for n, c in layer_channels(model, dataset, names).items()}
    return rotate_layers(model, rotations)


def dissect_rotated(model: nn.Module, dataset, layers, alpha: float, seed: int = 0, **options):
    """Dissect the representation of each of ``layers`` rotated by ``Q^alpha`` (``Q`` from ``seed`` and the layer's
    name): a :class:`~interpretorch.dissect.run.Dissection` under the original layer names.

    ``options`` go to :func:`~interpretorch.dissect.run.dissect`; a checkpoint records alpha and seed, and a resume
    with another alpha or seed is refused naming it. ``alpha = 0`` dissects the layers as they are. The model is
    not changed.
    """
    from interpretorch.dissect.broden import BrodenDataset
    from interpretorch.dissect.run import dissect

    if isinstance(dataset, (str, Path)):
        dataset = BrodenDataset(dataset)
    names = [layers] if isinstance(layers, str) else list(layers)
    alpha = check_alpha(alpha)
    rotated = rotated_copy(model, dataset, names, alpha, seed)
    settings = {"rotation alpha": alpha, "rotation seed": int(seed)}
    result = dissect(rotated, dataset, [rotated_site(n) for n in names], settings=settings, **options)
    result.layers = {n: result.layers[rotated_site(n)] for n in names}
    for n, ld in result.layers.items():
        ld.layer = n
    return result
