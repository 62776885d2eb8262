"""Image operations several families need (one implementation each)."""
from __future__ import annotations

from typing import Sequence

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


def draw_box(image: torch.Tensor, box: Sequence[float], color: Sequence[float] = (1.0, 0.1, 0.1),
             width: int = 2) -> torch.Tensor:
    """A copy of ``image`` (3, H, W) in [0, 1] with the outline of ``box`` (x0, y0, x1, y1, pixels) drawn in
    ``color``, ``width`` pixels thick inside the box (clipped to the image)."""
    out = image.clone()
    _, h, w = out.shape
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = max(0, min(w - 1, x0)), max(0, min(w, x1))
    y0, y1 = max(0, min(h - 1, y0)), max(0, min(h, y1))
    if x1 <= x0 or y1 <= y0:
        return out
    c = torch.tensor(list(color), dtype=out.dtype, device=out.device)[:, None, None]
    t = max(1, int(width))
    out[:, y0:min(y1, y0 + t), x0:x1] = c
    out[:, max(y0, y1 - t):y1, x0:x1] = c
    out[:, y0:y1, x0:min(x1, x0 + t)] = c
    out[:, y0:y1, max(x0, x1 - t):x1] = c
    return out


def draw_outline(image: torch.Tensor, mask: torch.Tensor, color: Sequence[float] = (1.0, 0.1, 0.1)) -> torch.Tensor:
    """A copy of ``image`` (3, H, W) in [0, 1] with the boundary pixels of ``mask`` (H, W) bool (region pixels
    with a 4-neighbour outside it) drawn in ``color``."""
    m = mask.to(image.device).bool()
    pad = F.pad(m[None, None].float(), (1, 1, 1, 1), value=0.0)[0, 0]
    inner = (pad[:-2, 1:-1] > 0) & (pad[2:, 1:-1] > 0) & (pad[1:-1, :-2] > 0) & (pad[1:-1, 2:] > 0)
    edge = m & ~inner
    out = image.clone()
    c = torch.tensor(list(color), dtype=out.dtype, device=out.device)[:, None, None].expand_as(out)
    return torch.where(edge[None], c, out)
