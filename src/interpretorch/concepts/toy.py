"""A controlled concept data set and a small CNN trained on it: the class is decided by one concept.

Each image is a textured background (scikit-image brick / grass / gravel, tinted) with a pattern patch
pasted at a random place: **stripes** for class 0, **dots** for class 1 (colours, angles, widths random). Half
of the images of *both* classes also carry a **checker** patch somewhere else, so the checkerboard is a
concept the images contain that does not decide the class. This is the controlled experiment of TCAV
(Kim et al. 2018, section 4.3) in miniature: a model that classifies well must use stripes and dots and has
no reason to use checkerboards, and we know where each concept is in every image.

``train_concept_cnn`` trains the CNN from scratch in under a minute, single-threaded and seeded, so the same
config gives the same weights on the same platform (CPU kind and torch build; another CPU's kernels round
differently and give other weights). The weights of the default config ship in
``interpretorch/concepts/weights/concept_cnn.pt``, written by ``python -m interpretorch.concepts.toy --out PATH``;
``load_concept_cnn`` reads them back and checks their sha256, so every machine explains the same model.
"""
from __future__ import annotations

import hashlib
import io
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from interpretorch.concepts.generate import checker_image, dots_image, solid_image, stripes_image, texture_image
from interpretorch.models.synthetic_cnn import SyntheticCNN
from interpretorch.models.preprocess import Preprocess
from interpretorch.training import accuracy, finish, seeded_single_thread, train_command, train_epoch

CLASSES = ("stripes", "dots")
PREPROCESS = Preprocess(48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
PATTERNS = {"stripes": stripes_image, "dots": dots_image, "checker": checker_image, "solid": solid_image}
DISTRACTOR = "solid"


def _pattern(name: str, rng: np.random.Generator, patch: int) -> np.ndarray:
    if name == "checker":
        return checker_image(rng, patch, scales=(3, 4), angles=(0,))
    return PATTERNS[name](rng, patch)


@dataclass
class ConceptImages:
    """Images (N, 3, S, S) in [0, 1], labels (N,), the box of the deciding patch and of the checker patch
    (N, 4) ``x0, y0, x1, y1`` (the checker box is all -1 when the image has none)."""

    images: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    distractor_boxes: torch.Tensor
    meta: dict = field(default_factory=dict)


def _place(rng: np.random.Generator, size: int, patch: int, avoid: tuple[int, int] | None) -> tuple[int, int]:
    """A random top-left corner for a patch, not overlapping the patch at ``avoid``."""
    if avoid is None:
        return int(rng.integers(0, size - patch + 1)), int(rng.integers(0, size - patch + 1))
    pos = np.arange(size - patch + 1)
    xs, ys = np.meshgrid(pos, pos, indexing="xy")
    ok = (np.abs(xs - avoid[0]) >= patch) | (np.abs(ys - avoid[1]) >= patch)
    cand = np.flatnonzero(ok.ravel())
    if cand.size == 0:
        raise ValueError(f"two {patch} px patches do not fit side by side in {size} px images")
    k = int(cand[rng.integers(cand.size)])
    return int(xs.ravel()[k]), int(ys.ravel()[k])


def make_concept_images(n: int, seed: int = 0, size: int = 48, patch: int = 16, distractor_rate: float = 0.5,
                        patterns: tuple[str, ...] = CLASSES, distractor: str = DISTRACTOR) -> ConceptImages:
    """``n`` images whose label is which of ``patterns`` is pasted on them; image i depends only on (seed, i)."""
    imgs, labels, boxes, cboxes = [], [], [], []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, 7])
        img = texture_image(rng, size)
        label = int(rng.integers(len(patterns)))
        x0, y0 = _place(rng, size, patch, None)
        img[y0:y0 + patch, x0:x0 + patch] = _pattern(patterns[label], rng, patch)
        cbox = (-1, -1, -1, -1)
        if rng.uniform() < distractor_rate:
            cx, cy = _place(rng, size, patch, (x0, y0))
            img[cy:cy + patch, cx:cx + patch] = _pattern(distractor, rng, patch)
            cbox = (cx, cy, cx + patch, cy + patch)
        imgs.append(img)
        labels.append(label)
        boxes.append((x0, y0, x0 + patch, y0 + patch))
        cboxes.append(cbox)
    return ConceptImages(torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().contiguous(),
                         torch.tensor(labels), torch.tensor(boxes, dtype=torch.float32),
                         torch.tensor(cboxes, dtype=torch.float32),
                         {"seed": seed, "size": size, "patch": patch, "patterns": patterns})


def concept_examples(pattern: str, n: int, seed: int, size: int = 48, patch: int = 16) -> torch.Tensor:
    """``n`` images of one pattern patch on the same kind of backgrounds (a concept set for TCAV)."""
    out = []
    for i in range(n):
        rng = np.random.default_rng([int(seed), i, 11])
        img = texture_image(rng, size)
        x0, y0 = _place(rng, size, patch, None)
        img[y0:y0 + patch, x0:x0 + patch] = _pattern(pattern, rng, patch)
        out.append(img)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().contiguous()


def backgrounds(n: int, seed: int, size: int = 48) -> torch.Tensor:
    """``n`` bare tinted texture backgrounds (random sets for TCAV)."""
    imgs = [texture_image(np.random.default_rng([int(seed), i, 13]), size) for i in range(n)]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().contiguous()


class ConceptCNN(SyntheticCNN):
    """The synthetic CNN's architecture with the last block undilated and ReLUs not in place: three conv-BN-ReLU
    blocks with pooling, a fourth block, global average pooling and a linear head. Same parameter names and
    shapes as before it became a :class:`SyntheticCNN`, so the shipped weights load unchanged (no key remap)."""

    def __init__(self, num_classes: int = len(CLASSES), width: int = 12) -> None:
        super().__init__(num_classes, width, last_dilation=1, inplace_relu=False)


@dataclass(frozen=True)
class ToyConfig:
    """Everything that determines the trained weights."""

    seed: int = 0
    data_seed: int = 1
    n_train: int = 1200
    n_val: int = 300
    epochs: int = 6
    batch_size: int = 50
    lr: float = 1e-2
    weight_decay: float = 1e-3
    width: int = 12


def train_concept_cnn(config: ToyConfig = ToyConfig()) -> tuple[ConceptCNN, float, float]:
    """Train the CNN on ``make_concept_images``; returns (model in eval mode, validation accuracy, seconds)."""
    start = time.perf_counter()
    with seeded_single_thread(config.seed):
        data = make_concept_images(config.n_train + config.n_val, seed=config.data_seed)
        x = PREPROCESS.normalize(data.images)
        y = data.labels
        xt, yt, xv, yv = x[:config.n_train], y[:config.n_train], x[config.n_train:], y[config.n_train:]
        model = ConceptCNN(len(CLASSES), config.width)
        opt = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
        steps = config.epochs * -(-config.n_train // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps)
        gen = torch.Generator().manual_seed(config.seed)
        for _ in range(config.epochs):
            train_epoch(model, xt, yt, opt, gen, config.batch_size, sched)
        acc = accuracy(finish(model), xv, yv)
        return model, acc, time.perf_counter() - start


# sha256 of the shipped weights file (``weights/concept_cnn.pt``), checked at every load of the packaged file.
WEIGHTS_SHA256 = "175391999a5cdea4b17c2f30ceb0d9854a3af74d113918a03b16fb6747021ddb"


def save_concept_cnn(model: ConceptCNN, path: str | Path, config: ToyConfig, val_accuracy: float) -> Path:
    """Write the weights with the config that reproduces them and their validation accuracy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": asdict(config), "val_accuracy": val_accuracy}, path)
    return path


def _packaged_weights() -> object:
    from importlib import resources

    return resources.files("interpretorch.concepts").joinpath("weights/concept_cnn.pt")


def load_concept_cnn(path: str | Path | None = None, sha256: str | None = None) -> tuple[ConceptCNN, dict]:
    """The trained ConceptCNN (eval mode) and its checkpoint's metadata (config, validation accuracy); the
    packaged weights when ``path`` is None. The file's sha256 must equal ``sha256`` (``WEIGHTS_SHA256`` for the
    packaged file; no check for another path unless given)."""
    if path is None:
        path, sha256 = _packaged_weights(), sha256 or WEIGHTS_SHA256
    with open(path, "rb") as fh:  # works for package resources and plain paths alike
        raw = fh.read()
    if sha256 is not None:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != sha256:
            raise ValueError(f"{str(path)!r} has sha256 {digest}, expected {sha256}: not the shipped concept CNN")
    ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a concept CNN checkpoint (expected state_dict and config)")
    config = ToyConfig(**ckpt["config"])
    model = ConceptCNN(len(CLASSES), config.width)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval(), {"config": config, "val_accuracy": float(ckpt["val_accuracy"])}


def main(argv: list[str] | None = None) -> None:
    """Command line: train the concept CNN and write its weights."""
    def run(config: ToyConfig, out: str) -> str:
        model, acc, seconds = train_concept_cnn(config)
        path = save_concept_cnn(model, out, config, acc)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"validation accuracy {acc:.4f}; trained in {seconds:.1f} s; wrote {path} (sha256 {digest})"
    train_command("python -m interpretorch.concepts.toy",
                  "Train the concept CNN (stripes vs dots) on the seeded concept images.", ToyConfig, run, argv)


if __name__ == "__main__":
    main()
