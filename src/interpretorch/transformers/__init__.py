"""Explanations for self-attention models: attention capture robust to fused attention, rollout, gradient-weighted
rollout, AttnLRP, token Grad-CAM (images) and token attributions for BERT-style text models.

``transformers`` (Hugging Face) is imported only by the text functions.
"""
from interpretorch.transformers import methods  # noqa: F401 - registers the family's methods
from interpretorch.transformers.attention import (AttentionRecord, attention_kind, attention_maps,
                                                  attention_modules, capture_attention)
from interpretorch.transformers.lrp import attnlrp_rules
from interpretorch.transformers.rollout import (fuse_heads, gradient_rollout_matrix, readout, rollout_matrix)
from interpretorch.transformers.vision import (attention_rollout, attnlrp, gradient_rollout, raw_attention,
                                               token_gradcam)

__all__ = ["AttentionRecord", "attention_kind", "attention_maps", "attention_modules", "capture_attention",
           "attnlrp_rules", "fuse_heads", "gradient_rollout_matrix", "readout", "rollout_matrix",
           "attention_rollout", "attnlrp", "gradient_rollout", "raw_attention", "token_gradcam"]
