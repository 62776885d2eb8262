"""The small generator, discriminator and segmenter that ship with interpretorch, and loading a user's own.

The shipped pair is trained by ``python -m interpretorch.gan.train`` on the seeded synthetic images of
``interpretorch.data.synthetic`` (coloured shapes on textured backgrounds) at 32 x 32 pixels: a DCGAN-style
generator ``z (B, 64) -> image (B, 3, 32, 32)`` in [-1, 1], and a segmenter ``image -> (B, 7, 32, 32)`` logits
over :data:`CONCEPTS` (the three background textures and the four shapes), trained on the same generator of
data with its known masks, so generated images can be segmented into the concepts the data was drawn from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from interpretorch.data.synthetic import SHAPES, TEXTURES

# Segmentation classes of the shipped segmenter: background textures first, then the shapes.
CONCEPTS: tuple[str, ...] = TEXTURES + SHAPES
CONCEPT_CATEGORY: dict[str, str] = {**{t: "texture" for t in TEXTURES}, **{s: "shape" for s in SHAPES}}
IMAGE_SIZE = 32
# The shipped generator's middle layers (8 x 8 and 16 x 16 feature maps), dissected by default.
MIDDLE_LAYERS: tuple[str, ...] = ("layer2", "layer3")


def _seeded(seed: int | None):
    """Context: torch's global RNG seeded with ``seed`` inside (restored after); a no-op for None."""
    import contextlib

    if seed is None:
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def scope():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    return scope()


class Generator(nn.Module):
    """DCGAN generator: ``z (B, z_dim)`` -> image (B, 3, 32, 32) in [-1, 1].

    ``layer1`` .. ``layer3`` are ConvTranspose-BN-ReLU blocks giving 4 x 4, 8 x 8 and 16 x 16 feature maps with
    ``widths`` channels; ``output`` is the last transposed convolution and tanh.
    """

    def __init__(self, z_dim: int = 64, widths: Sequence[int] = (128, 96, 48), seed: int | None = 0) -> None:
        super().__init__()
        self.z_dim = int(z_dim)
        w1, w2, w3 = widths
        with _seeded(seed):
            self.layer1 = nn.Sequential(nn.ConvTranspose2d(z_dim, w1, 4, 1, 0, bias=False), nn.BatchNorm2d(w1),
                                        nn.ReLU())
            self.layer2 = nn.Sequential(nn.ConvTranspose2d(w1, w2, 4, 2, 1, bias=False), nn.BatchNorm2d(w2),
                                        nn.ReLU())
            self.layer3 = nn.Sequential(nn.ConvTranspose2d(w2, w3, 4, 2, 1, bias=False), nn.BatchNorm2d(w3),
                                        nn.ReLU())
            self.output = nn.Sequential(nn.ConvTranspose2d(w3, 3, 4, 2, 1), nn.Tanh())
            for m in self.modules():  # DCGAN initialisation
                if isinstance(m, nn.ConvTranspose2d):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.normal_(m.weight, 1.0, 0.02)
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.layer1(z.reshape(z.shape[0], self.z_dim, 1, 1))
        return self.output(self.layer3(self.layer2(x)))


class Discriminator(nn.Module):
    """DCGAN discriminator: image (B, 3, 32, 32) in [-1, 1] -> one logit per image (B,)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128), seed: int | None = 1) -> None:
        super().__init__()
        w1, w2, w3 = widths
        with _seeded(seed):
            self.net = nn.Sequential(
                nn.Conv2d(3, w1, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(w1, w2, 4, 2, 1, bias=False), nn.BatchNorm2d(w2), nn.LeakyReLU(0.2),
                nn.Conv2d(w2, w3, 4, 2, 1, bias=False), nn.BatchNorm2d(w3), nn.LeakyReLU(0.2),
                nn.Conv2d(w3, 1, 4, 1, 0))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(x.shape[0])


class Segmenter(nn.Module):
    """Small fully convolutional segmenter: image (B, 3, H, W) in [-1, 1] -> (B, K, H, W) logits.

    Two downsampling stages widen the receptive field (textures are told apart by their pattern over several
    pixels); the coarse features are upsampled and joined with full-resolution ones by a per-pixel head.
    """

    def __init__(self, classes: int = len(CONCEPTS), width: int = 24, seed: int | None = 2) -> None:
        super().__init__()
        w = width

        def block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        with _seeded(seed):
            self.stem = block(3, w)
            self.down1 = nn.Sequential(nn.MaxPool2d(2), block(w, w))
            self.down2 = nn.Sequential(nn.MaxPool2d(2), block(w, w), block(w, w, 2))
            self.up = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)
            self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            self.head = nn.Sequential(nn.Conv2d(3 * w, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                                      nn.Conv2d(w, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x)
        d1 = self.down1(s)
        d2 = self.down2(d1)
        return self.head(torch.cat([s, self.up1(d1), self.up(d2)], dim=1))


@dataclass
class GANPair:
    """A generator with the segmenter that labels its images, and what a dissection needs to know of them.

    ``z_shape``: the shape of one latent sample; ``classes``: the segmenter's class names (K of them);
    ``categories``: a category name per class (all "concept" when none is known); ``layers``: the layers
    dissected when none are asked for.
    """

    generator: nn.Module
    segmenter: nn.Module
    z_shape: tuple[int, ...]
    classes: list[str]
    categories: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    name: str = "generator"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.categories:
            self.categories = ["concept"] * len(self.classes)
        if len(self.categories) != len(self.classes):
            raise ValueError(f"{len(self.categories)} categories for {len(self.classes)} classes")


def _weights_path(name: str) -> Path | object:
    return resources.files("interpretorch.gan").joinpath(f"weights/{name}")


def load_checkpoint(path: str | Path | object) -> dict:
    """Read a checkpoint written by the training script (``torch.load`` with ``weights_only=True``)."""
    with open(path, "rb") as fh:  # package resources and plain paths alike
        ckpt = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not an interpretorch GAN checkpoint (expected state_dict and config)")
    return ckpt


def load_generator(path: str | Path | None = None) -> Generator:
    """The shipped generator (or one written by ``interpretorch.gan.train``), in eval mode."""
    ckpt = load_checkpoint(path if path is not None else _weights_path("generator.pt"))
    cfg = ckpt["config"]
    g = Generator(cfg["z_dim"], tuple(cfg["g_widths"]), seed=None)
    g.load_state_dict(ckpt["state_dict"], strict=True)
    return g.eval()


def load_segmenter(path: str | Path | None = None) -> Segmenter:
    """The shipped segmenter (or one written by ``interpretorch.gan.train``), in eval mode."""
    ckpt = load_checkpoint(path if path is not None else _weights_path("segmenter.pt"))
    cfg = ckpt["config"]
    s = Segmenter(len(CONCEPTS), cfg["s_width"], seed=None)
    s.load_state_dict(ckpt["state_dict"], strict=True)
    return s.eval()


def shipped_pair(device: str | torch.device = "cpu") -> GANPair:
    """The shipped generator and segmenter with their concepts, on ``device``."""
    g = load_generator().to(device)
    s = load_segmenter().to(device)
    return GANPair(g, s, (g.z_dim,), list(CONCEPTS), [CONCEPT_CATEGORY[c] for c in CONCEPTS],
                   list(MIDDLE_LAYERS), "interpretorch shipped DCGAN (synthetic shapes on textures, 32 px)")


def concept_targets(seed: int, start: int, n: int, size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic images (n, 3, size, size) in [-1, 1] and their per-pixel concept indices (n, size, size).

    A pixel is its shape's concept inside the object mask and its background texture's concept elsewhere.
    """
    from interpretorch.data.synthetic import make_image

    imgs, segs = [], []
    for i in range(start, start + n):
        img, label, mask, _ = make_image(seed, i, size)
        # the background texture is the first draw of the image's own random stream (see synthetic._background)
        texture = int(np.random.default_rng([int(seed), int(i)]).integers(len(TEXTURES)))
        seg = np.where(mask, len(TEXTURES) + label, texture)
        imgs.append(img)
        segs.append(seg)
    x = torch.from_numpy(np.stack(imgs)) * 2.0 - 1.0
    return x, torch.from_numpy(np.stack(segs)).long()
