"""Registration of the image-transformer methods with the method registry: done when the package is imported
(``interpretorch.transformers`` imports this module), and again by ``register_methods()``."""
from __future__ import annotations

NAMES = ("attention", "rollout", "gradient_rollout", "attnlrp", "token_gradcam")


def register_methods() -> None:
    """Register attention, rollout, gradient_rollout, attnlrp and token_gradcam (idempotent)."""
    from interpretorch.attribution.registry import register
    from interpretorch.transformers.attention import attention_modules

    def has_attention(model) -> bool:
        return bool(attention_modules(model))
    from interpretorch.transformers.vision import (attention_rollout, attnlrp, gradient_rollout, raw_attention,
                                                   token_gradcam)

    register("attention", raw_attention, kind="region", aliases=("raw_attention",),
             replace=True, applies=has_attention, class_agnostic=True,
             doc="The class token's attention to the patches in the last layer, heads averaged.")
    register("rollout", attention_rollout, kind="region", aliases=("attention_rollout",),
             replace=True, applies=has_attention, class_agnostic=True,
             doc="Attention rollout (Abnar & Zuidema 2020), read out at the class token.")
    register("gradient_rollout", gradient_rollout, kind="region", aliases=("chefer", "grad_rollout"),
             replace=True, applies=has_attention,
             doc="Gradient-weighted attention rollout (Chefer et al. 2021, LRP-free rule).")
    register("attnlrp", attnlrp, kind="region", aliases=("attn_lrp",),
             replace=True, applies=has_attention,
             doc="AttnLRP (Achtibat et al. 2024): one forward and one modified backward pass.")
    register("token_gradcam", token_gradcam, kind="region", needs_layer=True, aliases=("vit_gradcam",),
             replace=True, applies=has_attention,
             doc="Grad-CAM on transformer patch tokens (default: the input of the last attention).")


register_methods()
