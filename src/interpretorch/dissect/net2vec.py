"""Net2Vec (Fong & Vedaldi 2018): per concept, a learned non-negative combination of a layer's units.

For each pixel label ``l`` the mask is ``sigmoid(sum_u w_lu * a_u(x) + b_l) > 0.5`` with ``w_l >= 0``, where
``a_u`` is unit ``u``'s activation (divided by its standard deviation over the training images) upsampled to the
mask size. ``w, b`` minimise Net2Vec's class-balanced pixel BCE (weight ``1 - f_l`` on the concept's pixels and
``f_l`` elsewhere, ``f_l`` its pixel frequency) over the training images that carry the concept's category.
Images are split by index (even: training, odd: evaluation); on the evaluation images the combination's set IoU
is reported beside the best single unit's (chosen on the training images by NetDissect IoU at the top-quantile
threshold, and evaluated with that threshold).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.capture import capture
from interpretorch.core import model_device, rows_per_pass
from interpretorch.dissect.broden import BrodenDataset, collate
from interpretorch.dissect.stats import IoUTally, TopQuantile, label_masks


@dataclass
class ConceptVector:
    """One concept's unit combination and its IoU on the evaluation images beside the best single unit's."""

    label: str
    category: str
    weights: torch.Tensor    # (U,) non-negative, on standardised activations
    bias: float
    iou: float               # set IoU of the combination on the evaluation images
    unit: int                # best single unit (on the training images)
    unit_iou: float          # that unit's IoU on the evaluation images


def _collect(model: nn.Module, dataset: BrodenDataset, layer: str, batch_size: int | None, max_bytes: int):
    device = model_device(model)
    bs = rows_per_pass(batch_size, device)
    acts, pixels, image_labels, cats = [], [], [], []
    used = 0
    with capture(model, [layer], grad=False) as rec, torch.no_grad():
        for s in range(0, len(dataset), bs):
            batch = collate([dataset[i] for i in range(s, min(len(dataset), s + bs))])
            rec.calls.clear()
            model(batch["image"].to(device))
            a = rec[layer]
            if a.dim() != 4:
                raise ValueError(f"layer {layer!r} gives activations of shape {tuple(a.shape)}; Net2Vec needs "
                                 "(B, C, H, W) feature maps")
            if not torch.isfinite(a).all():
                raise ValueError(f"layer {layer!r} produced NaN or infinite activations")
            used += a.numel() * a.element_size() + batch["pixel"].numel() * 2
            if used > max_bytes:
                raise ValueError(f"the activations of {layer!r} over {len(dataset)} images exceed max_bytes="
                                 f"{max_bytes}; use fewer images or raise max_bytes")
            acts.append(a.float().clone())
            pixels.append(batch["pixel"].to(device))
            image_labels.append(batch["image_labels"].to(device))
            cats.append(batch["categories"].to(device))
    m = max(p.shape[1] for p in pixels)
    pixels = [F.pad(p, (0, 0, 0, 0, 0, m - p.shape[1])) for p in pixels]
    k = max(t.shape[1] for t in image_labels)
    image_labels = [F.pad(t, (0, k - t.shape[1]), value=-1) for t in image_labels]
    return torch.cat(acts), torch.cat(pixels), torch.cat(image_labels), torch.cat(cats)


def net2vec(model: nn.Module, dataset: BrodenDataset, layer: str, *, quantile: float = 0.005, steps: int = 200,
            lr: float = 0.05, batch_size: int | None = None, max_bytes: int = 1 << 30,
            min_pixels: int = 1) -> list[ConceptVector]:
    """Learn a non-negative unit combination per pixel label of ``dataset`` at ``layer``; compare with single units.

    Keeps the layer's activations over the dataset in memory (at most ``max_bytes``); labels with fewer than
    ``min_pixels`` pixels in the training or evaluation images are skipped. The model is left as it was.
    """
    if len(dataset) < 2:
        raise ValueError("Net2Vec needs at least 2 images (even indices train, odd ones evaluate)")
    acts, pixel, image_labels, cats = _collect(model, dataset, layer, batch_size, max_bytes)
    device = acts.device
    info = dataset.info
    num_labels = info.num_labels
    n, units = acts.shape[:2]
    sh, sw = pixel.shape[-2:]
    label_category = torch.full((num_labels,), -1, dtype=torch.long)
    for num, ci in info.label_category.items():
        label_category[num] = ci
    train = torch.arange(0, n, 2, device=device)
    test = torch.arange(1, n, 2, device=device)

    # single units, NetDissect style: thresholds and best unit from the training images
    quant = TopQuantile(units, quantile, len(train) * acts.shape[2] * acts.shape[3], device)
    quant.update(acts[train])
    t = quant.thresholds()
    tallies = {}
    for name, idx in (("train", train), ("test", test)):
        tally = IoUTally(units, label_category, len(info.categories), device)
        tally.update(acts[idx], t, pixel[idx], image_labels[idx], cats[idx])
        tallies[name] = tally
    train_iou, test_iou = tallies["train"].iou(), tallies["test"].iou()

    present, y = label_masks(pixel, torch.full((n, 1), -1, dtype=torch.long, device=device), num_labels)
    pixel_labels = [int(v) for v in present.tolist()]
    if not pixel_labels:
        raise ValueError("the dataset has no pixel labels; Net2Vec segments pixel concepts")
    std = acts[train].transpose(0, 1).reshape(units, -1).std(dim=1).clamp(min=1e-12)
    x = F.interpolate(acts / std.view(1, -1, 1, 1), size=(sh, sw), mode="bilinear", align_corners=False)
    x = x.reshape(n, units, sh * sw)  # (N, U, S)
    target = y.float().permute(0, 2, 1)  # (N, L_p, S)
    lab_cat = label_category.to(device)[present]
    valid = cats[:, lab_cat].float()  # (N, L_p): image carries the label's category
    tr_valid = valid[train]
    freq = (target[train].sum(2) * tr_valid).sum(0) / (tr_valid.sum(0) * sh * sw).clamp(min=1)
    alpha = (1 - freq).view(1, -1, 1)

    g = torch.Generator(device="cpu").manual_seed(0)
    w = (torch.rand(len(pixel_labels), units, generator=g) * 0.01).to(device).requires_grad_(True)
    b = torch.zeros(len(pixel_labels), device=device, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    xt, yt, vt = x[train], target[train], tr_valid.view(len(train), -1, 1)
    with torch.enable_grad():
        for _ in range(steps):
            logits = torch.einsum("lu,nus->nls", w, xt) + b.view(1, -1, 1)
            weight = (alpha * yt + (1 - alpha) * (1 - yt)) * vt
            loss = F.binary_cross_entropy_with_logits(logits, yt, weight=weight, reduction="sum")
            loss = loss / vt.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                w.clamp_(min=0.0)
    with torch.no_grad():
        pred = (torch.einsum("lu,nus->nls", w, x[test]) + b.view(1, -1, 1)) > 0
        yv = target[test] > 0
        vv = valid[test].bool().unsqueeze(2)
        inter = (pred & yv & vv).sum(dim=(0, 2))
        union = ((pred | yv) & vv).sum(dim=(0, 2))
    out = []
    for j, num in enumerate(pixel_labels):
        if (tallies["train"].truth[num] < min_pixels) or (tallies["test"].truth[num] < min_pixels):
            continue
        unit = int(train_iou[:, num].argmax())
        out.append(ConceptVector(info.label_names[num], info.categories[int(label_category[num])],
                                 w[j].detach().cpu(), float(b[j].detach()),
                                 float(inter[j]) / max(1, int(union[j])), unit, float(test_iou[unit, num])))
    return out
