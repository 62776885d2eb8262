"""A small CNN for the synthetic localisation set, and the reproducible script that trains it.

``python -m interpretorch.models.synthetic_cnn --out synthetic_cnn.pt`` trains it from scratch
(about half a minute on two CPU cores, single-threaded so the weights do not depend on the thread
count) and writes ``{"state_dict", "config", "val_accuracy", "made_with"}``; ``load_synthetic_cnn``
reads it back.

The data are bit-identical everywhere, but the weights are only reproducible bit for bit on one kind
of CPU with one torch build: the convolution and matmul kernels (oneDNN, MKL) pick their vector
instruction set at run time, their float32 rounding differs in the last bits between e.g. AVX-512
and AVX2, and 200 steps of training amplify that into visibly different weights of the same
accuracy. ``made_with`` records the torch version and CPU capability the weights came from.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from interpretorch.data.synthetic import SHAPES, make_localisation_set
from interpretorch.models.layers import StagedModule
from interpretorch.models.preprocess import Preprocess
from interpretorch.training import accuracy, finish, seeded_single_thread, train_command, train_epoch

PREPROCESS = Preprocess(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
CAM_LAYER = "features"


def _block(cin: int, cout: int, dilation: int = 1, inplace: bool = True) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=inplace)]


class SyntheticCNN(StagedModule):
    """Four conv-BN-ReLU blocks (the last dilated), two poolings, global average pooling and a linear head.

    At 64 px the ``features`` output is 32 x 16 x 16 with a 30 px receptive field. ``last_dilation`` and
    ``inplace_relu`` let the concept CNN (:class:`interpretorch.concepts.toy.ConceptCNN`: undilated, ReLUs not in
    place so a hooked BN output is not overwritten) be this same class; they change no parameter name or shape.
    """

    def __init__(self, num_classes: int = len(SHAPES), width: int = 8, *, last_dilation: int = 2,
                 inplace_relu: bool = True) -> None:
        super().__init__()
        w, r = width, inplace_relu
        self.features = nn.Sequential(*_block(3, w, inplace=r), nn.MaxPool2d(2), *_block(w, 2 * w, inplace=r),
                                      nn.MaxPool2d(2), *_block(2 * w, 4 * w, inplace=r),
                                      *_block(4 * w, 4 * w, dilation=last_dilation, inplace=r))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(4 * w, num_classes)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """Ordered (name, module) pairs whose composition is ``forward``."""
        return [("features", self.features), ("pool", self.pool), ("flatten", self.flatten), ("fc", self.fc)]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights."""

    seed: int = 0
    data_seed: int = 1
    val_seed: int = 2
    n_train: int = 2500
    n_val: int = 500
    size: int = 64
    epochs: int = 5
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-4
    width: int = 8


def train_synthetic_cnn(config: TrainConfig = TrainConfig(), verbose: bool = False) -> tuple[SyntheticCNN, float]:
    """Train the CNN on the synthetic set from scratch; returns the model (eval mode) and its validation accuracy.

    Runs single-threaded with seeded initialisation, data and shuffling, so the same config gives
    the same weights on the same platform (CPU kind and torch build; another CPU gives other weights
    of about the same accuracy); the global RNG and thread count are restored afterwards.
    """
    with seeded_single_thread(config.seed):
        train = make_localisation_set(config.n_train, seed=config.data_seed, size=config.size)
        val = make_localisation_set(config.n_val, seed=config.val_seed, size=config.size)
        x, y = PREPROCESS.normalize(train.images), train.labels
        xv, yv = PREPROCESS.normalize(val.images), val.labels
        model = SyntheticCNN(len(train.classes), config.width)
        opt = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = -(-config.n_train // config.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.epochs * steps_per_epoch)
        gen = torch.Generator().manual_seed(config.seed)
        start = time.perf_counter()
        for epoch in range(config.epochs):
            loss = train_epoch(model, x, y, opt, gen, config.batch_size, sched)
            if verbose:
                acc = accuracy(model, xv, yv)
                print(f"epoch {epoch + 1}/{config.epochs}: loss {loss.item():.3f}, val accuracy {acc:.3f}, "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
        return finish(model), accuracy(model, xv, yv)


def save_synthetic_cnn(model: SyntheticCNN, path: str | Path, config: TrainConfig, val_accuracy: float) -> Path:
    """Write the weights with the config that reproduces them and the platform that made them."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    made_with = {"torch": str(torch.__version__), "numpy": str(np.__version__),
                 "cpu_capability": str(torch.backends.cpu.get_cpu_capability())}
    torch.save({"state_dict": model.state_dict(), "config": asdict(config), "val_accuracy": val_accuracy,
                "made_with": made_with}, path)
    return path


def load_synthetic_cnn(path: str | Path, device: str | torch.device = "cpu"):
    """Read weights written by ``save_synthetic_cnn``; returns a LoadedModel (eval mode) with its preprocessing."""
    from interpretorch.models import LoadedModel

    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a synthetic CNN checkpoint (expected state_dict and config)")
    config = TrainConfig(**ckpt["config"])
    model = SyntheticCNN(len(SHAPES), config.width)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval().to(device)
    return LoadedModel(model, PREPROCESS, list(SHAPES), CAM_LAYER, "synthetic_cnn")


def main(argv: list[str] | None = None) -> None:
    """Command line: train the synthetic CNN and write its weights."""
    def run(config: TrainConfig, out: str) -> str:
        start = time.perf_counter()
        model, acc = train_synthetic_cnn(config, verbose=True)
        path = save_synthetic_cnn(model, out, config, acc)
        return f"validation accuracy {acc:.4f}; trained in {time.perf_counter() - start:.1f} s; wrote {path}"
    train_command("python -m interpretorch.models.synthetic_cnn",
                  "Train the small CNN on the seeded synthetic localisation set.", TrainConfig, run, argv)


if __name__ == "__main__":
    main()
