"""The data randomization test: ``SyntheticCNN`` trained on permuted labels of the synthetic localisation set.

``train_random_label_cnn`` trains the architecture of the true-label model (``models.synthetic_cnn``) on the
first ``n_train`` images of the same training stream with their labels permuted (a seeded permutation, so the
class frequencies stay those of the data), until its training accuracy in eval mode reaches
``target_accuracy`` (Zhang et al. 2017: a network can fit random labels, it just needs longer). Everything is
seeded and runs single-threaded, so one config gives the same weights on one platform; its test accuracy on
true labels should be at chance (1 / number of classes).

``python -m interpretorch.sanity.data --out random_label_cnn.pt`` trains it and writes the weights.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from interpretorch.data.synthetic import SHAPES, make_localisation_set
from interpretorch.models.synthetic_cnn import PREPROCESS, SyntheticCNN, TrainConfig
from interpretorch.training import accuracy, finish, seeded_single_thread, train_command, train_epoch


@dataclass(frozen=True)
class RandomLabelConfig:
    """Everything that determines the random-label weights."""

    seed: int = 0
    data_seed: int = TrainConfig.data_seed  # the true-label model's training stream
    label_seed: int = 3
    test_seed: int = TrainConfig.val_seed  # the true-label model's validation stream
    n_train: int = 128  # 66 epochs to 95 % on the shared 2-core VM (555 s wall at load 15, one thread)
    n_test: int = 500
    size: int = 64
    max_epochs: int = 300
    target_accuracy: float = 0.95
    batch_size: int = 32
    lr: float = 3e-3
    width: int = TrainConfig.width


@dataclass
class RandomLabelRun:
    """The trained model and how well it fits: train accuracy on the permuted labels, test on the true ones."""

    model: SyntheticCNN
    train_accuracy: float
    test_accuracy: float
    chance: float
    epochs: int
    seconds: float
    config: RandomLabelConfig

    def summary(self) -> dict:
        """The numbers, JSON-ready."""
        return {"train_accuracy (permuted labels)": self.train_accuracy,
                "test_accuracy (true labels)": self.test_accuracy, "chance": self.chance, "epochs": self.epochs,
                "training_seconds": self.seconds, "config": asdict(self.config)}


def permuted_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """``labels`` shuffled by a seeded permutation (the same multiset of classes, assigned at random)."""
    g = torch.Generator().manual_seed(int(seed))
    return labels[torch.randperm(labels.numel(), generator=g)]


def train_random_label_cnn(config: RandomLabelConfig = RandomLabelConfig(), verbose: bool = False) -> RandomLabelRun:
    """Train ``SyntheticCNN`` on permuted labels until it fits them (``target_accuracy``) or ``max_epochs``.

    Raises when the target is not reached, so a test never silently compares with an unfitted model.
    """
    if not 0 < config.target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1], got {config.target_accuracy}")
    start = time.perf_counter()
    with seeded_single_thread(config.seed):
        train = make_localisation_set(config.n_train, seed=config.data_seed, size=config.size)
        test = make_localisation_set(config.n_test, seed=config.test_seed, size=config.size)
        x, y = PREPROCESS.normalize(train.images), permuted_labels(train.labels, config.label_seed)
        xt, yt = PREPROCESS.normalize(test.images), test.labels
        model = SyntheticCNN(len(SHAPES), config.width)
        opt = torch.optim.Adam(model.parameters(), config.lr)
        gen = torch.Generator().manual_seed(config.seed)
        acc, epoch = 0.0, 0
        for epoch in range(1, config.max_epochs + 1):
            loss = train_epoch(model, x, y, opt, gen, config.batch_size)
            acc = accuracy(model, x, y)
            if verbose and (epoch % 10 == 0 or acc >= config.target_accuracy):
                print(f"epoch {epoch}: loss {loss.item():.3f}, train accuracy (permuted labels) {acc:.3f}, "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
            if acc >= config.target_accuracy:
                break
        if acc < config.target_accuracy:
            raise RuntimeError(f"the random-label model reached {acc:.3f} training accuracy in "
                               f"{config.max_epochs} epochs, below the target {config.target_accuracy}; "
                               "raise max_epochs or lower n_train")
        return RandomLabelRun(finish(model), acc, accuracy(model, xt, yt), 1.0 / len(SHAPES), epoch,
                              time.perf_counter() - start, config)


def save_random_label_cnn(run: RandomLabelRun, path: str | Path) -> Path:
    """Write the weights with the config that reproduces them and the accuracies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = run.summary()
    torch.save({"state_dict": run.model.state_dict(), "config": asdict(run.config),
                "train_accuracy": run.train_accuracy, "test_accuracy": run.test_accuracy, "epochs": s["epochs"]},
               path)
    return path


def load_random_label_cnn(path: str | Path) -> tuple[SyntheticCNN, dict]:
    """Read weights written by ``save_random_label_cnn``: (model in eval mode, the saved numbers)."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{str(path)!r} is not a random-label CNN checkpoint (expected state_dict and config)")
    config = RandomLabelConfig(**ckpt["config"])
    model = SyntheticCNN(len(SHAPES), config.width)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval(), {k: v for k, v in ckpt.items() if k != "state_dict"}


def main(argv: list[str] | None = None) -> None:
    """Command line: train the random-label CNN and write its weights."""
    def run_(config: RandomLabelConfig, out: str) -> str:
        run = train_random_label_cnn(config, verbose=True)
        path = save_random_label_cnn(run, out)
        return (f"train accuracy (permuted labels) {run.train_accuracy:.4f}, test accuracy (true labels) "
                f"{run.test_accuracy:.4f} (chance {run.chance:.2f}); {run.epochs} epochs in {run.seconds:.1f} s; "
                f"wrote {path}")
    train_command("python -m interpretorch.sanity.data", "Train SyntheticCNN on permuted labels of the synthetic set.",
                  RandomLabelConfig, run_, argv)


if __name__ == "__main__":
    main()
