"""What loading a model gives (the model with its preprocessing, class names and CAM layer) and the ImageNet
class names: below the zoo and the hub loaders, which both build them."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from torch import nn

from interpretorch.models.preprocess import Preprocess

__all__ = ["LoadedModel", "imagenet_classes"]


@dataclass
class LoadedModel:
    """A model in eval mode with its preprocessing, class names and preferred CAM layer."""

    model: nn.Module
    preprocess: Preprocess
    class_names: list[str] = field(default_factory=list)
    cam_layer: str | None = None
    name: str = "model"


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """Return the 1000 ImageNet-1k class names (WordNet synonyms, comma separated) in index order."""
    text = resources.files("interpretorch.data").joinpath("imagenet_classes.txt").read_text()
    names = text.strip("\n").split("\n")
    assert len(names) == 1000
    return names
