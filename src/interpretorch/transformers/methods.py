"""Registration of the transformer methods with the method registry (the lead calls ``register_methods()``)."""
from __future__ import annotations


def register_methods() -> None:
    """Register attention, rollout, gradient_rollout, attnlrp and token_gradcam for image transformers."""
    from interpretorch.attribution import registry
    from interpretorch.transformers.vision import (attention_rollout, attnlrp, gradient_rollout, raw_attention,
                                                   token_gradcam)

    entries = [("attention", raw_attention, "region", False, ("raw_attention",),
                "The class token's attention in the last layer (heads averaged)."),
               ("rollout", attention_rollout, "region", False, ("attention_rollout",),
                "Attention rollout (Abnar & Zuidema 2020)."),
               ("gradient_rollout", gradient_rollout, "region", False, ("chefer", "grad_rollout"),
                "Gradient-weighted attention rollout (Chefer et al. 2021)."),
               ("attnlrp", attnlrp, "region", False, ("attn_lrp",), "AttnLRP (Achtibat et al. 2024)."),
               ("token_gradcam", token_gradcam, "region", True, ("vit_gradcam",),
                "Grad-CAM on transformer patch tokens.")]
    for name, fn, kind, needs_layer, aliases, doc in entries:
        try:  # the registry of the architecture issue
            registry.register(name, fn, kind=kind, needs_layer=needs_layer, aliases=aliases, doc=doc)
        except TypeError:  # the older registry: register(name, fn, layer=...)
            registry.register(name, fn, layer=needs_layer)
