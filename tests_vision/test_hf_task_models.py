"""hf: DETR, SegFormer, CLIP-vision and DINOv2 (tiny random-weight configs saved to a folder, no network) load
wrapped to torchvision's outputs or (B, D) embeddings, with a CAM layer that Grad-CAM explains."""
from __future__ import annotations

import pytest
import torch

from interpretorch.models import load_model


def _configs():
    import transformers as tf

    small_resnet = tf.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1],
                                   out_features=["stage4"])
    return {
        "detr": tf.DetrConfig(use_timm_backbone=False, backbone_config=small_resnet, use_pretrained_backbone=False,
                              num_queries=8, d_model=16, encoder_layers=1, decoder_layers=1,
                              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=16,
                              decoder_ffn_dim=16, num_labels=3),
        "segformer": tf.SegformerConfig(num_labels=3, hidden_sizes=[8, 16, 24, 32], decoder_hidden_size=16,
                                        depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], image_size=64),
        "clip": tf.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    image_size=32, patch_size=8, projection_dim=8),
        "dinov2": tf.Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for name, cfg in _configs().items():
        path = tmp_path_factory.mktemp(name)
        cfg.save_pretrained(path)
        out[name] = str(path)
    return out


def _gradcam(loaded, x, score):
    from interpretorch import explain

    torch.manual_seed(0)
    e = explain(loaded.model, x, methods=["gradcam"], target=score, layer=loaded.cam_layer)
    return e["gradcam"].maps if isinstance(e, dict) else e.maps


def test_detr_gives_torchvision_detections_and_gradcam_explains_them(folders):
    torch.manual_seed(0)
    loaded = load_model(f"hf:{folders['detr']}", pretrained=False)
    loaded.model.score_threshold = 0.0  # random weights: keep every query
    assert "backbone" in loaded.cam_layer and len(loaded.class_names) == 3
    x = torch.rand(2, 3, 64, 64)
    out = loaded.model(x)
    assert len(out) == 2 and out[0]["boxes"].shape == (8, 4) and out[0]["scores"].shape == (8,)
    cx = (out[0]["boxes"][:, 0] + out[0]["boxes"][:, 2]) / 2
    assert float(cx.detach().min()) >= 0 and float(cx.detach().max()) <= 64  # centres in the input's pixels
    from interpretorch.core.targets import DetectionTarget

    maps = _gradcam(loaded, x, DetectionTarget(index=0))
    assert maps.shape[0] == 2 and torch.isfinite(maps).all() and maps.flatten(1).amax(1).gt(0).all()


def test_segformer_gives_logits_at_the_input_size(folders):
    loaded = load_model(f"hf:{folders['segformer']}", pretrained=False)
    assert loaded.cam_layer == "model.decode_head.linear_fuse"
    x = torch.rand(1, 3, 64, 64)
    assert loaded.model(x)["out"].shape == (1, 3, 64, 64)
    from interpretorch.core.targets import SegmentationTarget

    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[8:40, 16:48] = True
    maps = _gradcam(loaded, x, SegmentationTarget(category=1, mask=mask))
    assert maps.shape == (1, 64, 64) and torch.isfinite(maps).all()


@pytest.mark.parametrize("name,layer", [("clip", "model.vision_model.encoder.layers.1.layer_norm1"),
                                        ("dinov2", "model.encoder.layer.1.norm1")])
def test_image_encoders_give_embeddings_and_a_token_layer(folders, name, layer):
    loaded = load_model(f"hf:{folders[name]}", pretrained=False)
    assert loaded.cam_layer == layer
    x = torch.rand(2, 3, 32, 32)
    emb = loaded.model(x)
    assert emb.shape == (2, 8 if name == "clip" else 16)
    from interpretorch.core.targets import SimilarityTarget

    maps = _gradcam(loaded, x, SimilarityTarget(emb[0].detach()))
    assert maps.shape[-2:] == (32, 32) and torch.isfinite(maps).all()
