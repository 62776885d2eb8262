"""Small transformers for the tests: a random tiny ViT and a random 2-layer BERT in both attention paths."""
from __future__ import annotations

import pytest
import torch

from interpretorch.models.vit import TinyViT


@pytest.fixture
def vit() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT(image_size=32, patch=8, dim=32, depth=2, num_heads=4, stem=0).eval()


def tiny_bert(impl: str, seed: int = 0):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=16, attn_implementation=impl)
    torch.manual_seed(seed)
    return transformers.BertModel(cfg).eval()


@pytest.fixture
def bert_pair():
    eager, sdpa = tiny_bert("eager"), tiny_bert("sdpa")
    sdpa.load_state_dict(eager.state_dict())
    return eager, sdpa


@pytest.fixture
def bert_batch():
    ids = torch.tensor([[2, 5, 6, 7, 8, 3], [2, 9, 10, 3, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    return ids, mask
