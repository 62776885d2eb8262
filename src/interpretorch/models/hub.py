"""Models by name from timm, torchvision and Hugging Face, each with its library's own preprocessing and class names.

``timm:NAME`` (timm's data config: input size, crop fraction, interpolation, mean, std), ``torchvision:NAME`` (the
weights' own transforms and categories) and ``hf:PATH_OR_NAME`` (a Hugging Face image classifier and its image
processor). Pretrained weights come only through those libraries' own download caches; ``pretrained=False`` builds
the architecture with random weights (no network).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from interpretorch.models.preprocess import Preprocess

PREFIXES = ("timm:", "torchvision:", "hf:")


def is_hub_spec(spec: str) -> bool:
    """Whether ``spec`` names a model of timm, torchvision or Hugging Face (``timm:resnet18``, ...)."""
    return isinstance(spec, str) and spec.startswith(PREFIXES)


def _require(module: str, spec: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = "pip install 'interpretorch[vision]'" if module in ("timm", "torchvision") else "pip install transformers"
        raise ImportError(f"--model {spec} needs {module.split('.')[0]}, which does not import here ({e}); "
                          f"{extra}") from e


def load_timm(name: str, pretrained: bool = True) -> tuple[nn.Module, Preprocess, list[str], str | None]:
    """A timm model with the preprocessing of its data config and its class names."""
    timm = _require("timm", f"timm:{name}")
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except RuntimeError as e:
        if "Unknown model" in str(e) or "Invalid pretrained tag" in str(e):
            import difflib

            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise ValueError(f"timm has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
        raise
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    pre = Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), resize=int(math.floor(size / crop_pct)),
                     interpolation=str(cfg.get("interpolation", "bicubic")))
    n = int(getattr(model, "num_classes", 0) or 0)
    names: list[str] = []
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset:
            names = list(ImageNetInfo(subset).label_descriptions())
    except (ImportError, AttributeError, ValueError, KeyError):
        names = []
    if len(names) != n:
        names = _default_names(n)
    layer = None
    info = getattr(model, "feature_info", None)
    if info:
        try:
            layer = info[-1]["module"] or None
        except (KeyError, IndexError, TypeError):
            layer = None
    return model, pre, names, layer


def load_torchvision(name: str, pretrained: bool = True) -> tuple[nn.Module, Preprocess, list[str], str | None]:
    """A torchvision model with its weights' transforms and categories (random weights when not ``pretrained``)."""
    _require("torchvision", f"torchvision:{name}")
    from torchvision.models import get_model, get_model_weights, list_models

    if name not in list_models():
        import difflib

        close = difflib.get_close_matches(name, list_models(), n=3)
        raise ValueError(f"torchvision has no model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    weights = get_model_weights(name).DEFAULT
    names = list(weights.meta.get("categories") or [])
    kind = type(weights.transforms()).__name__
    if kind in ("ObjectDetection", "SemanticSegmentation"):
        return _torchvision_task_model(name, weights, pretrained, names, detection=kind == "ObjectDetection")
    model = get_model(name, weights=weights if pretrained else None)
    tf = weights.transforms()
    crop = int(tf.crop_size[0])
    resize = int(tf.resize_size[0]) if getattr(tf, "resize_size", None) else crop
    interpolation = getattr(tf.interpolation, "value", str(tf.interpolation))
    pre = Preprocess(crop, tuple(tf.mean), tuple(tf.std), resize=resize, interpolation=str(interpolation))
    return model, pre, names, None


def _torchvision_task_model(name: str, weights: Any, pretrained: bool, names: list[str], detection: bool
                            ) -> tuple[nn.Module, Preprocess, list[str], str | None]:
    """A torchvision detector (wrapped to take a batch of [0, 1] images; it normalises inside) or segmenter (its
    weights' normalisation), random weights and random backbone when not ``pretrained``, with its CAM layer."""
    from torchvision.models import get_model

    from interpretorch.models.vision_tasks import BatchedDetector, default_task_layer

    if pretrained:
        model = get_model(name, weights=weights)
    else:  # no download at all: the detectors' and segmenters' builders fetch a pretrained backbone by default
        model = get_model(name, weights=None, weights_backbone=None)
    if detection:
        wrapped = BatchedDetector(model)
        min_size = getattr(model.transform, "min_size", (512,))
        size = min(int(min(min_size)), 512)  # the detector resizes to its own min_size inside
        return wrapped, Preprocess(size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), interpolation="bilinear"), names, \
            default_task_layer(wrapped)
    tf = weights.transforms()
    size = min(int(tf.resize_size[0]), 512) if getattr(tf, "resize_size", None) else 512
    interpolation = getattr(tf.interpolation, "value", str(tf.interpolation))
    pre = Preprocess(size, tuple(tf.mean), tuple(tf.std), interpolation=str(interpolation))
    return model, pre, names, default_task_layer(model)


class HFImageClassifier(nn.Module):
    """A Hugging Face image classifier as a plain module: pixel values in, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def _hf_preprocess(processor: Any, config: Any) -> Preprocess:
    mean = tuple(getattr(processor, "image_mean", None) or (0.5, 0.5, 0.5))
    std = tuple(getattr(processor, "image_std", None) or (0.5, 0.5, 0.5))
    size = getattr(processor, "size", None) or {}
    crop = getattr(processor, "crop_size", None) or {}
    interp = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}.get(
        int(getattr(getattr(processor, "resample", 3), "value", getattr(processor, "resample", 3)) or 3), "bicubic")
    if isinstance(size, dict) and "height" in size:  # ViT-style: resized to height x width, no crop
        return Preprocess(int(size["height"]), mean, std, interpolation=interp, crop=False)
    if isinstance(size, dict) and "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        if getattr(processor, "do_center_crop", False) and isinstance(crop, dict) and "height" in crop:
            return Preprocess(int(crop["height"]), mean, std, resize=edge, interpolation=interp)
        pct = getattr(processor, "crop_pct", None)
        if pct:  # ConvNeXt: shorter side to edge / crop_pct, then an edge x edge crop
            return Preprocess(edge, mean, std, resize=int(edge / pct), interpolation=interp)
        return Preprocess(edge, mean, std, interpolation=interp)
    return Preprocess(int(getattr(config, "image_size", 224) or 224), mean, std, interpolation=interp, crop=False)


def load_hf(path: str, pretrained: bool = True, trust_code: bool = False
            ) -> tuple[nn.Module, Preprocess, list[str], str | None]:
    """A Hugging Face image classifier, or a DETR detector, SegFormer segmenter or CLIP-vision / DINOv2 encoder
    wrapped as in ``models.vision_tasks`` (a local folder or a hub name, from the hub cache) with its image processor's
    preprocessing and ``id2label`` class names; random weights of the same config when not ``pretrained``. Model
    code shipped with the checkpoint (``trust_remote_code``) runs only when ``trust_code``."""
    transformers = _require("transformers", f"hf:{path}")
    remote = {"trust_remote_code": bool(trust_code)}
    try:
        config = transformers.AutoConfig.from_pretrained(path, **remote)
        task = _hf_task_model(transformers, path, config, pretrained, remote)
        if task is not None:
            return task
        if pretrained:
            model = transformers.AutoModelForImageClassification.from_pretrained(path, **remote)
        else:
            model = transformers.AutoModelForImageClassification.from_config(config, **remote)
    except (OSError, ValueError) as e:
        if "trust_remote_code" in str(e) and not trust_code:
            from interpretorch.models.safe_load import UnsafeModelFile

            raise UnsafeModelFile(f"hf:{path}", "needs the Python code shipped with the checkpoint "
                                                "(trust_remote_code)") from None
        raise ValueError(f"--model hf:{path}: not a Hugging Face image classifier here "
                         f"(a local folder, or a name in the hub cache): {str(e).splitlines()[0]}") from None
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(path, **remote)
        pre = _hf_preprocess(processor, config)
    except (OSError, ValueError):
        pre = Preprocess(int(getattr(config, "image_size", 224) or 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop=False)
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    names = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(n)]
    wrapped = HFImageClassifier(model)
    return wrapped, pre, names, _hf_token_layer(wrapped)


def _hf_task_model(transformers: Any, path: str, config: Any, pretrained: bool, remote: dict
                   ) -> tuple[nn.Module, Preprocess, list[str], str | None] | None:
    """A Hugging Face detector (DETR), segmenter (SegFormer) or image encoder (CLIP vision, DINOv2) wrapped to give
    torchvision's outputs or (B, D) embeddings, with its preprocessing, class names and CAM layer; None for
    another model type."""
    import re

    from interpretorch.models.vision_tasks import HF_TASKS, HFEmbedder

    kind = getattr(config, "model_type", "")
    if kind not in HF_TASKS:
        return None
    auto, wrapper = HF_TASKS[kind]
    cls = getattr(transformers, auto)
    if kind == "clip" and not pretrained:
        config = config.vision_config
    if pretrained:
        model = cls.from_pretrained(path, **remote)
    else:  # the Auto classes build from a config with from_config, the concrete ones by calling the class
        model = cls.from_config(config, **remote) if hasattr(cls, "from_config") else cls(config)
    model.eval()
    wrapped = wrapper(model)
    try:
        pre = _hf_preprocess(transformers.AutoImageProcessor.from_pretrained(path, **remote), config)
    except (OSError, ValueError):
        pre = Preprocess(int(getattr(config, "image_size", 224) or 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop=False)
    names = [n for n, _ in wrapped.named_modules()]
    if wrapper is HFEmbedder:
        return wrapped, pre, [], _hf_token_layer(wrapped)
    id2label = getattr(config, "id2label", None) or {}
    n = int(getattr(config, "num_labels", len(id2label)) or len(id2label))
    classes = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(n)]
    if kind == "segformer":  # the decode head's fusion of the four stages: the last map before the classifier
        return wrapped, pre, classes, "model.decode_head.linear_fuse"
    # DETR: the CNN backbone's last stage (the transformer after it works on flattened tokens)
    stages = [m for m in names if "backbone" in m and re.search(r"(stages\.\d+|layer\d)$", m)]
    return wrapped, pre, classes, (stages[-1] if stages else None)


def _hf_token_layer(model: nn.Module) -> str | None:
    """For a transformer whose only spatial maps are in its patch embedding: the last block's first norm (its
    tokens are laid out as a patch grid by the CAMs); None lets the default search find a spatial layer."""
    names = [n for n, _ in model.named_modules()]
    if any(isinstance(m, nn.Conv2d) and "embed" not in n for n, m in model.named_modules()):
        return None
    norms = [n for n in names if n.endswith(("layernorm_before", "norm1", "layer_norm1"))]
    return norms[-1] if norms else None


def _default_names(n: int) -> list[str]:
    if n == 1000:
        from interpretorch.models.loaded import imagenet_classes

        return imagenet_classes()
    return [f"class {i}" for i in range(n)]


def load_hub_model(spec: str, pretrained: bool = True, trust_code: bool = False
                   ) -> tuple[nn.Module, Preprocess, list[str], str | None]:
    """(model, preprocessing, class names, CAM layer or None) of ``timm:NAME``, ``torchvision:NAME`` or
    ``hf:PATH_OR_NAME`` (its shipped Python code runs only when ``trust_code``)."""
    prefix, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--model {spec}: give a model name after '{prefix}:', e.g. {prefix}:resnet18")
    if prefix == "hf":
        return load_hf(name, pretrained, trust_code)
    loader = {"timm": load_timm, "torchvision": load_torchvision}[prefix]
    return loader(name, pretrained)
