"""Group-CAM and SS-CAM: Score-CAM's idea (weight maps by the model's response to inputs masked with them) with
grouped channels and a blurred substrate (Group-CAM) or with noisy masks (SS-CAM).

Both score their masked rows through the same chunked loop as Score-CAM (``common.score_rows``): the rows of
all images together, ``batch_size`` per model call.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.cam_variants import weighted_pass, gaussian_blur
from interpretorch.attribution.common import finish_region, method_inputs, resolve_layer, score_rows
from interpretorch.attribution.registry import register
from interpretorch.attribution.score import layer_activations
from interpretorch.core import rows_per_pass, seed_for
from interpretorch.core.targets import Target, check_target, tensor_outputs
from interpretorch.explanation import Explanation


def blur_images(x: torch.Tensor, kernel: int = 51, sigma: float = 50.0) -> torch.Tensor:
    """Gaussian-blur each channel of (B, C, H, W) images (borders reflected); Group-CAM's baseline: 51 px, sigma 50."""
    b, c, h, w = x.shape
    return gaussian_blur(x.reshape(b * c, h, w), kernel, sigma).reshape(b, c, h, w)


def _min_max(m: torch.Tensor) -> torch.Tensor:
    lo = m.flatten(1).amin(1).view(-1, 1, 1)
    hi = m.flatten(1).amax(1).view(-1, 1, 1)
    return (m - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))


def group_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1",
              layer: str | nn.Module | None = None, *, batch_size: int | None = None, groups: int = 32,
              percentile: float = 70.0, blur_kernel: int = 51, blur_sigma: float = 50.0, relu: bool = True,
              normalize: bool = False) -> Explanation:
    """Group-CAM (Zhang et al. 2021): Grad-CAM-weighted channels summed in ``groups`` groups, each group's map
    scored by how much keeping its region over a blurred image raises the target probability.

    Channels are split into consecutive groups (``torch.chunk``); each group map is ReLU'd, zeroed at or below
    its ``percentile`` (the paper's denoising, 70), upsampled, min-max normalised into a mask M, and scored as
    p(x M + blur(x) (1 - M)) - p(blur(x)) (softmax probability of the target, blur: Gaussian 51 px, sigma
    50, the paper's); the map is the score-weighted sum of the masks. Constant group maps are skipped, as
    in the reference code. One forward / backward to the layer, one forward per group and one for the
    blurred image.
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")

    def rule(a, g, ctx, hvp):
        wa = g.mean(dim=(2, 3), keepdim=True) * a
        return torch.stack([c.sum(1) for c in wa.chunk(groups, dim=1)], 1)  # (B, G, h, w)

    gmaps, name, idx, clean, out, x = weighted_pass(model, inputs, target, layer, batch_size, rule)
    target = check_target(target, x.shape[0])
    batch_size = rows_per_pass(batch_size, x.device)
    b, n_g = gmaps.shape[:2]
    size = tuple(x.shape[-2:])
    gm = F.relu(gmaps)
    th = torch.quantile(gm.flatten(2).double(), percentile / 100.0, dim=2).to(gm.dtype)[:, :, None, None]
    gm = torch.where(gm > th, gm, torch.zeros_like(gm))
    up = F.interpolate(gm, size=size, mode="bilinear", align_corners=False)  # (B, G, H, W)
    flat = up.flatten(2)
    varying = flat.amax(-1) > flat.amin(-1)
    pairs = varying.nonzero(as_tuple=False)  # (N, 2): (image, group)
    blurred = blur_images(x, blur_kernel, blur_sigma)
    # Rows 0..B-1: the blurred images (the baseline); then one row per (image, group) pair.
    scores = torch.zeros(b + len(pairs), dtype=torch.float64, device=x.device)

    def image_of(r: torch.Tensor) -> torch.Tensor:
        return torch.where(r < b, r, pairs[(r - b).clamp_min(0), 0] if len(pairs) else r)

    def make_rows(r: torch.Tensor):
        i = image_of(r)
        m = torch.zeros((len(r),) + size, dtype=x.dtype, device=x.device)
        grp = r >= b
        if grp.any():
            p = pairs[r[grp] - b]
            m[grp] = _min_max(up[p[:, 0], p[:, 1]])
        m = m[:, None]
        return x[i] * m + blurred[i] * (1 - m), r

    def consume(i: torch.Tensor, s: torch.Tensor, r: torch.Tensor) -> None:
        scores[r] = s.double()

    score_rows(model, b + len(pairs), make_rows, image_of=image_of, device=x.device, target=target, idx=idx,
               score="softmax", batch_size=batch_size, consume=consume, what="Group-CAM masked inputs")
    weights = torch.zeros(b, n_g, dtype=torch.float64, device=x.device)
    weights[pairs[:, 0], pairs[:, 1]] = scores[b:] - scores[pairs[:, 0]]
    masks = torch.zeros_like(up)
    masks[pairs[:, 0], pairs[:, 1]] = _min_max(up[pairs[:, 0], pairs[:, 1]])
    sal = torch.einsum("bg,bghw->bhw", weights.to(x.dtype), masks)
    raw, maps = finish_region(sal, size, relu, normalize)
    return Explanation(maps=maps, method="groupcam", target=idx, layer=name, raw=raw, scores=clean, outputs=out,
                       extras={"group_weights": weights, "baseline_scores": scores[:b]})


register("groupcam", group_cam, kind="region", needs_layer=True, aliases=("group-cam",))


def ss_cam(model: nn.Module, inputs: torch.Tensor, target: Target = "top1", layer: str | nn.Module | None = None,
           *, batch_size: int | None = None, n_samples: int = 1, stdev: float = 2.0, seed: int = 0,
           relu: bool = True, normalize: bool = False) -> Explanation:
    """SS-CAM (Wang et al. 2020): Score-CAM with each channel's weight averaged over noisy copies of its mask.

    Channel k's mask M_k is its activation map upsampled and min-max normalised (as Score-CAM); its weight
    is the mean target probability of x (M_k + ``stdev`` e_s) over ``n_samples`` Gaussian draws e_s (noise on
    the mask, the paper's SS-CAM(1); sample s draws the same (C, H, W) noise for every image and channel,
    whatever the chunking). torch-cam's setting (the paper's) is n_samples=35, stdev=2.0; each sample
    costs as much as a whole Score-CAM (one forward per channel: 1280 per image on EfficientNet-Lite0), so
    the default is one sample, which keeps ``explain --methods all`` within minutes on a CPU; pass
    n_samples=35 for the paper's smoothing. Channels whose map is constant are scored on x (0 + noise)
    like any other.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    x, target, batch_size = method_inputs(model, inputs, target, batch_size)
    name = resolve_layer(model, layer, x)
    a, out, idx, clean = layer_activations(model, x, name, target)
    b, c = a.shape[:2]
    size = tuple(x.shape[-2:])
    noise = torch.empty((n_samples,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    gen = torch.Generator(device=x.device)
    for s in range(n_samples):
        gen.manual_seed(seed_for(seed, s))
        noise[s] = torch.randn(tuple(x.shape[1:]), generator=gen, dtype=x.dtype, device=x.device)
    weights = torch.zeros(b, c, dtype=torch.float64, device=x.device)
    per = c * n_samples  # rows of one image: channel-major, then sample

    def make_rows(r: torch.Tensor):
        i, k, s = r // per, (r % per) // n_samples, r % n_samples
        up = F.interpolate(a[i, k][:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        m = _min_max(up)[:, None]
        return x[i] * (m + stdev * noise[s]), k

    def consume(i: torch.Tensor, s: torch.Tensor, k: torch.Tensor) -> None:
        weights.index_put_((i, k), s.double() / n_samples, accumulate=True)

    score_rows(model, b * per, make_rows, image_of=lambda r: r // per, device=x.device, target=target, idx=idx,
               score="softmax", batch_size=batch_size, consume=consume, what="SS-CAM noisy masked inputs")
    raw, maps = finish_region(torch.einsum("bc,bchw->bhw", weights.to(a.dtype), a), size, relu, normalize)
    return Explanation(maps=maps, method="sscam", target=idx, layer=name, raw=raw, scores=clean,
                       extras={"channel_weights": weights, "n_samples": n_samples, "stdev": stdev},
                       outputs=tensor_outputs(out))


register("sscam", ss_cam, kind="region", needs_layer=True, aliases=("ss-cam",))
