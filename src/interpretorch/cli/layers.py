"""``interpretorch layers``: the layers a CAM can use, with their output shapes."""
from __future__ import annotations

import argparse

import torch

from interpretorch.cli.common import add_model_arguments, load_model_from_args

NAME = "layers"
HELP = "list a model's layers with (B, C, H, W) or token outputs, and their shapes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The shared model flags."""
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Print each module giving a (B, C, H, W) output, with its shape, in call order."""
    from interpretorch.capture import spatial_layers

    loaded = load_model_from_args(args)
    size = loaded.preprocess.size
    example = torch.zeros(1, 3, size, size, device=args.device)
    for name, shape in spatial_layers(loaded.model, example):
        print(f"{name:40s} {tuple(shape[1:])}")
    return 0
