"""Image operations several families need (one implementation each)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """Blur (B, C, H, W) images with a separable Gaussian of ``sigma`` pixels, truncated to ``kernel_size``.

    The default kernel reaches 3 sigma (rounded), cut to the image; borders are reflected (replicated
    when the kernel is wider than the image). ``sigma`` 0 returns a copy.
    """
    if sigma < 0 or (kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0)):
        raise ValueError(f"blur needs sigma >= 0 and an odd kernel_size, got sigma={sigma}, kernel_size={kernel_size}")
    if sigma == 0:
        return x.clone()
    h, w = x.shape[-2:]
    if kernel_size is None:
        r = max(1, min(int(3 * sigma + 0.5), h - 1, w - 1))
    else:
        r = kernel_size // 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    mode = "reflect" if min(h, w) > r else "replicate"
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
