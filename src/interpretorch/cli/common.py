"""What every command shares: the model flags, loading a model from them, image lists, targets, user errors."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit code 2."""


def printable(text: str) -> str:
    """``text`` with its control characters (line breaks, carriage returns, escapes) written as Python escapes."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def user_error_message(e: BaseException) -> str:
    """The one-line message shown for a user error (a KeyError's text without its quotes; an OSError's file and
    reason; only the first line of a longer text)."""
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    elif isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    else:
        text = str(e)
    lines = [line.strip() for line in text.strip().split("\n") if line.strip()]
    return printable(lines[0]) if lines else type(e).__name__


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def three_floats(text: str) -> tuple[float, float, float]:
    """argparse type: three comma-separated numbers (one per colour channel)."""
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers such as 0.485,0.456,0.406, "
                                         f"got {text!r}")
    return vals  # type: ignore[return-value]


def add_model_arguments(p: argparse.ArgumentParser, default_model: str = "efficientnet_lite0") -> None:
    """Add the flags every model-running command shares: --model, --device, --batch-size, --size, --mean, --std."""
    p.add_argument("--model", default=default_model,
                   help="efficientnet_lite0, tiny_cnn, timm:NAME, torchvision:NAME, hf:PATH_OR_NAME (a Hugging "
                        "Face image classifier), package.module:factory, or a saved model file "
                        "(torch.export .pt2 or TorchScript) (default: %(default)s)")
    p.add_argument("--no-pretrained", action="store_true",
                   help="timm:, torchvision: and hf: models with random weights instead of their pretrained ones "
                        "(no download)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="rows put through the model per call (an image, a noise sample, a mask, ...); "
                        "default 8 on the CPU, 64 on a GPU")
    p.add_argument("--size", type=positive_int, default=None,
                   help="input size in pixels (default: the model's own, 224 for a user model)")
    p.add_argument("--mean", type=three_floats, default=None,
                   help="per-channel normalisation mean, e.g. 0.485,0.456,0.406 (default: the model's own, "
                        "ImageNet's for a user model)")
    p.add_argument("--std", type=three_floats, default=None,
                   help="per-channel normalisation std, e.g. 0.229,0.224,0.225")
    add_trust_argument(p)


def add_trust_argument(p: argparse.ArgumentParser) -> None:
    """Add --trust-model-file: open model files that can run code (pickles, guard code, shipped Python)."""
    p.add_argument("--trust-model-file", action="store_true",
                   help="open a model file even when opening or running it can run code from it (a .pt2 with "
                        "pickled weights, a Hugging Face model with its own Python code); only for files you trust")


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` names Python to import (``package.module:factory``), not a zoo model, hub model or file."""
    from interpretorch.models.hub import is_hub_spec

    return (isinstance(spec, str) and ":" in spec and not is_hub_spec(spec) and not Path(spec).exists()
            and not spec.endswith((".pt2", ".pt", ".pth", ".ts", ".torchscript")))


def allow_working_directory_imports() -> None:
    """Let ``package.module:factory`` import from the working directory, searched AFTER the installed packages (a
    ``numpy.py`` lying in the folder never shadows numpy)."""
    import os

    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def load_model_error(spec: str, e: Exception) -> UserError:
    """A user factory's (or a model file's) failure as a one-line UserError."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return UserError(f"--model {spec}: building the model failed: {type(e).__name__}" + (f": {first}" if first else ""))


def check_device(device: str) -> torch.device:
    """Return ``device`` as a torch.device, or raise a UserError naming what is available."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device} asked for, but no CUDA device is available; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are available")
    elif dev.type != "cpu":
        raise UserError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return dev


def load_model_from_args(args: argparse.Namespace, device: str | None = None) -> Any:
    """Load ``--model`` on ``--device`` (or ``device``, e.g. the one ``torchrun`` assigns) with its preprocessing
    adjusted by ``--size``, ``--mean`` and ``--std``."""
    from interpretorch.models import load_model

    device = check_device(device or args.device)
    if is_factory_spec(args.model):
        allow_working_directory_imports()
    from interpretorch.models.hub import is_hub_spec

    random_weights = getattr(args, "no_pretrained", False)
    if random_weights and not is_hub_spec(args.model):
        raise UserError("--no-pretrained is for timm:NAME, torchvision:NAME and hf:PATH models")
    try:
        loaded = load_model(args.model, device=device, trust_code=getattr(args, "trust_model_file", False),
                            **({"pretrained": False} if random_weights else {}))
    except (UserError, ValueError, KeyError, FileNotFoundError, TypeError, ImportError, AttributeError):
        raise
    except Exception as e:  # a user's factory that raises is the user's error, said in one line
        raise load_model_error(args.model, e) from e
    pre = loaded.preprocess
    if getattr(args, "size", None):
        check_input_size(loaded.model, args.size, args.model, device)
    size = getattr(args, "size", None) or pre.size
    mean = getattr(args, "mean", None) or pre.mean
    std = getattr(args, "std", None) or pre.std
    if (size, tuple(mean), tuple(std)) != (pre.size, tuple(pre.mean), tuple(pre.std)):
        from dataclasses import replace

        return replace(loaded, preprocess=replace(pre.with_size(size), mean=tuple(mean), std=tuple(std)))
    return loaded


def check_input_size(model: torch.nn.Module, size: int, spec: str, device: torch.device | str = "cpu") -> None:
    """Put one blank ``size`` x ``size`` image through ``model``; a UserError when the model cannot take it."""
    from interpretorch.capture import frozen

    try:
        with torch.no_grad(), frozen(model):
            model(torch.zeros(1, 3, size, size, device=device))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--model {spec} cannot take the images at --size {size}, shape (1, 3, {size}, {size}) "
                        f"(set --size for its input): {type(e).__name__}: {first}") from None


def unpickling_refusal(e: BaseException) -> str:
    """One line saying why torch's weights-only loader refused a file: it names Python objects (which could run
    code) or it is not a torch file at all."""
    why = next((line.split("WeightsUnpickler error:", 1)[1].strip() for line in str(e).splitlines()
                if "WeightsUnpickler error:" in line), "")
    if "global" not in why.lower():
        return "is not a torch weights file (torch.save)" + (f": {why.rstrip('.')}" if why else "")
    why = why.split(" was not an allowed global")[0].replace("Unsupported global: GLOBAL ", "it names ")
    return f"holds Python objects besides tensors, which could run code, so it is not opened ({why.rstrip('.')})"


def load_weights(path: str, flag: str) -> Any:
    """``torch.load`` of a user's weights file with weights_only (nothing in it runs); a one-line UserError when
    the file is missing, is not a torch file, or holds more than tensors and plain containers."""
    import pickle

    if not Path(path).is_file():
        raise UserError(f"{flag} {path!r}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{flag} {path!r} {unpickling_refusal(e)}") from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, TypeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{flag} {path!r} is not a torch weights file (torch.save): {first}") from None


def parse_target(text: str) -> Any:
    """argparse type for --target: 'top1', a class index, or comma-separated indices (one per image)."""
    if text == "top1":
        return "top1"
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target must be 'top1', a class index or comma-separated indices, "
                                         f"got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def collect_images(paths: Sequence[str]) -> tuple[list[str], list[np.ndarray], list[dict]]:
    """Load every image (the bundled samples when none are given); unreadable ones are named, not fatal."""
    from interpretorch.data.samples import sample_images
    from interpretorch.models.preprocess import ImageLoadError, find_images, load_image

    if not paths:
        named = sample_images()
        return [n for n, _ in named], [a for _, a in named], []
    names, arrays, failed = [], [], []
    for f in find_images(paths):
        try:
            arrays.append(load_image(f))
            names.append(str(f))
        except ImageLoadError as e:
            print(f"interpretorch: skipping {f}: {e}", file=sys.stderr)
            failed.append({"file": str(f), "error": str(e)})
    return names, arrays, failed


def output_dir(path: str | Path, flag: str = "--out") -> Path:
    """Return ``path`` as a folder to write into, creating it; a UserError when it names an existing file or a
    folder that cannot be created or written."""
    from interpretorch.runstate import NotWritable, writable_folder

    try:
        return writable_folder(path)
    except NotWritable as e:
        raise UserError(f"{flag} {e}") from None


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v
