"""Automatic concept discovery: ACE (segments + k-means + TCAV) and CRAFT-style NMF of activations.

ACE (Ghorbani et al. 2019): every class image is cut into SLIC superpixels at several resolutions; each
segment, its surroundings filled with gray (117.5/255, as the original) and its bounding box resized to the
model's input, is a patch. Patches' activations at the layer (channel means) are clustered with k-means; a
cluster is kept when its patches come from enough different images (the original's three rules: in more than
half of the images; or in more than a quarter with more than a quarter as many members as images; or in more
than a tenth with more than half as many members), and is then a concept: its patches closest to the centre are
its examples, and TCAV with random-run significance says how much the class depends on it.

NMF (CRAFT, Fel et al. 2023, without its recursion): random crops of the class images, resized to the input,
give non-negative activations (C channels at every position); non-negative matrix factorisation ``A ~ U W``
finds ``k`` concept directions (rows of W) and every position's coefficients U. A concept's importance is the
mean drop of the class score when its part ``U[:, k] W[k]`` is removed from the class images' activations
(occlusion of the concept coefficient); its examples are the crops with the largest mean coefficient, and
they get TCAV scores with significance too.

Each concept is shown by its top patches, given as (image index, box x0, y0, x1, y1) in input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.capture import frozen, patched
from interpretorch.concepts.cache import compute_activations
from interpretorch.concepts.tcav import TCAVResult, run_tcav
from interpretorch.core import chunks, model_device, rows_per_pass
from interpretorch.core.targets import Target, check_target, split_target, target_indices, target_scores

GRAY = 117.5 / 255.0


@dataclass
class Patches:
    """Image parts as model-size patches: (M, 3, S, S) display images in [0, 1], source image, box, resolution."""

    images: torch.Tensor
    source: torch.Tensor
    boxes: torch.Tensor
    level: torch.Tensor


@dataclass
class DiscoveredConcept:
    """One discovered concept: its importance, TCAV score with significance and its top patches."""

    name: str
    importance: float
    score: float
    p_value: float
    significant: bool
    patches: list[dict]
    size: int
    n_images: int
    examples: torch.Tensor | None = None

    def to_json(self, image_names: Sequence[str] | None = None) -> dict:
        """The ``concepts.json`` entry (patches as {"image", "box"})."""
        pats = [{"image": image_names[p["image"]] if image_names else p["image"], "box": p["box"]}
                for p in self.patches]
        return {"name": self.name, "importance": self.importance, "score": self.score, "p_value": self.p_value,
                "significant": self.significant, "size": self.size, "n_images": self.n_images, "patches": pats}


@dataclass
class DiscoveryResult:
    """Concepts ranked by importance, with the TCAV run behind their scores."""

    target: Any
    layer: str
    method: str
    concepts: list[DiscoveredConcept]
    tcav: TCAVResult | None = None
    options: dict = field(default_factory=dict)

    def to_json(self, image_names: Sequence[str] | None = None) -> dict:
        """The ``concepts.json`` structure."""
        return {"target": self.target, "layer": self.layer, "method": self.method, "options": self.options,
                "concepts": [c.to_json(image_names) for c in self.concepts]}


def segment_patches(images: torch.Tensor, resolutions: Sequence[int] = (15, 50, 80), *, compactness: float = 20.0,
                    min_area: float = 0.005, max_overlap: float = 0.5, size: int | None = None) -> Patches:
    """SLIC superpixels of (N, 3, H, W) [0, 1] images at each resolution, as gray-filled, resized patches."""
    from skimage.segmentation import slic

    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W) images, got shape {tuple(images.shape)}")
    n, _, H, W = images.shape
    size = size or H
    pats, src, boxes, levels = [], [], [], []
    for i in range(n):
        img = images[i].permute(1, 2, 0).double().numpy()
        kept: list[np.ndarray] = []
        for level, n_seg in enumerate(resolutions):
            labels = slic(img, n_segments=int(n_seg), compactness=compactness, sigma=1.0, start_label=0,
                          channel_axis=-1)
            for lab in np.unique(labels):
                mask = labels == lab
                if mask.mean() < min_area:
                    continue
                if any((mask & k).sum() / (mask | k).sum() > max_overlap for k in kept):
                    continue
                kept.append(mask)
                ys, xs = np.nonzero(mask)
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                m = torch.from_numpy(mask[y0:y1, x0:x1]).to(images.dtype)
                crop = images[i, :, y0:y1, x0:x1] * m + GRAY * (1 - m)
                pats.append(F.interpolate(crop[None], size=(size, size), mode="bilinear", align_corners=False)[0])
                src.append(i)
                boxes.append((int(x0), int(y0), int(x1), int(y1)))
                levels.append(level)
    if not pats:
        raise ValueError("no segment was large enough; lower min_area or the resolutions")
    return Patches(torch.stack(pats).clamp(0, 1), torch.tensor(src), torch.tensor(boxes, dtype=torch.float32),
                   torch.tensor(levels))


def _keep_cluster(n_members: int, n_images_hit: int, n_images: int) -> bool:
    """ACE's rules: common in the images, or fairly common and populated, or rare but highly populated."""
    highly_common = n_images_hit > 0.5 * n_images
    mildly = n_images_hit > 0.25 * n_images and n_members > 0.25 * n_images
    rare_but_populated = n_images_hit > 0.1 * n_images and n_members > 0.5 * n_images
    return highly_common or mildly or rare_but_populated


def _random_sets_from(pool: torch.Tensor, runs: int, per_set: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed) + 7919)
    m = pool.shape[0]
    per_set = min(per_set, m)
    if m >= runs * per_set:
        perm = torch.randperm(m, generator=g)
        return [pool[perm[r * per_set:(r + 1) * per_set]] for r in range(runs)]
    return [pool[torch.randperm(m, generator=g)[:per_set]] for _ in range(runs)]


def _patch_json(src: torch.Tensor, boxes: torch.Tensor, order: torch.Tensor, top: int) -> list[dict]:
    return [{"image": int(src[j]), "box": [float(v) for v in boxes[j].tolist()]} for j in order[:top].tolist()]


def _rank(concepts: list[DiscoveredConcept]) -> list[DiscoveredConcept]:
    return sorted(concepts, key=lambda c: -c.importance)


def ace(model: nn.Module, images: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor], layer: str,
        target: Target = "top1", *, randoms: Sequence[torch.Tensor] | None = None,
        resolutions: Sequence[int] = (15, 50, 80), compactness: float = 20.0, n_clusters: int = 25, max_patches: int = 40,
        min_patches: int = 10, runs: int = 10, top: int = 8, seed: int = 0, batch_size: int | None = None,
        significance: float = 0.05, bonferroni: bool = False) -> DiscoveryResult:
    """ACE: concepts of the class in ``images`` (N, 3, H, W) [0, 1], ranked by TCAV score (significant first).

    ``normalize`` maps [0, 1] images to model inputs. ``randoms`` are model-ready random sets (default: ``runs``
    sets of random segments of the same images).
    """
    from sklearn.cluster import KMeans

    patches = segment_patches(images, resolutions, compactness=compactness)
    x = normalize(patches.images)
    acts = compute_activations(model, x, [layer], batch_size=batch_size)[layer]
    feats = (acts.flatten(2).mean(-1) if acts.dim() > 2 else acts).double().cpu().numpy()
    k = min(n_clusters, len(feats))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(feats)
    dist = np.linalg.norm(feats - km.cluster_centers_[km.labels_], axis=1)
    n_img = images.shape[0]
    members: dict[str, np.ndarray] = {}
    for c in range(k):
        idx = np.flatnonzero(km.labels_ == c)
        idx = idx[np.argsort(dist[idx], kind="stable")][:max_patches]
        hit = len(np.unique(patches.source[idx].numpy()))
        if len(idx) >= min_patches and _keep_cluster(len(idx), hit, n_img):
            members[f"concept_{c}"] = idx
    if not members:
        raise ValueError("no cluster was common enough across the images to be a concept; give more images or "
                         "fewer clusters")
    if randoms is None:
        randoms = _random_sets_from(x, runs, max_patches, seed)
    concept_sets = {name: x[torch.from_numpy(idx)] for name, idx in members.items()}
    tc = run_tcav(model, normalize(images), concept_sets, randoms, [layer], target, features="mean",
                  batch_size=batch_size, seed=seed, significance=significance, bonferroni=bonferroni)
    concepts = []
    for name, idx in members.items():
        r = tc.get(name, layer)
        order = torch.from_numpy(idx)
        concepts.append(DiscoveredConcept(name, r.score, r.score, r.p_value, r.significant,
                                          _patch_json(patches.source, patches.boxes, order, top), len(idx),
                                          int(len(np.unique(patches.source[order].numpy()))),
                                          patches.images[order[:top]]))
    return DiscoveryResult(tc.target, layer, "ace", _rank(concepts), tc,
                           {"resolutions": list(resolutions), "n_clusters": k, "max_patches": max_patches,
                            "runs": runs, "seed": seed, "features": "mean"})


def random_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float] = (0.25, 0.5), seed: int = 0
                      ) -> torch.Tensor:
    """``n`` random square boxes x0, y0, x1, y1 whose side is a ``scale`` fraction of the shorter image side."""
    rng = np.random.default_rng(int(seed))
    out = []
    for _ in range(n):
        side = max(2, int(round(min(height, width) * rng.uniform(*scale))))
        y0 = int(rng.integers(0, height - side + 1))
        x0 = int(rng.integers(0, width - side + 1))
        out.append((x0, y0, x0 + side, y0 + side))
    return torch.tensor(out, dtype=torch.float32)


def nmf_concepts(model: nn.Module, images: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor],
                 layer: str, target: Target = "top1", *, n_concepts: int = 6, crops_per_image: int = 8,
                 scale: tuple[float, float] = (0.25, 0.5), randoms: Sequence[torch.Tensor] | None = None,
                 runs: int = 10, max_patches: int = 40, top: int = 8, seed: int = 0,
                 batch_size: int | None = None, significance: float = 0.05) -> DiscoveryResult:
    """CRAFT-style concepts: NMF of crops' activations, ranked by the class-score drop when each is removed."""
    from sklearn.decomposition import NMF

    n, _, H, W = images.shape
    boxes = random_crop_boxes(n * crops_per_image, H, W, scale, seed)
    src = torch.arange(n).repeat_interleave(crops_per_image)
    crops = torch.stack([F.interpolate(images[i:i + 1, :, int(b[1]):int(b[3]), int(b[0]):int(b[2])], size=(H, W),
                                       mode="bilinear", align_corners=False)[0]
                         for i, b in zip(src.tolist(), boxes)])
    xc = normalize(crops)
    acts = compute_activations(model, xc, [layer], batch_size=batch_size)[layer]
    if acts.dim() != 4:
        raise ValueError(f"NMF concepts need a (B, C, h, w) layer, {layer!r} gives {tuple(acts.shape)}")
    if float(acts.min()) < -1e-6:
        raise ValueError(f"layer {layer!r} has negative activations (min {float(acts.min()):.3g}); NMF needs a "
                         "non-negative layer, e.g. the output of a ReLU")
    c, h, w = acts.shape[1:]
    if n_concepts > min(c, acts.shape[0] * h * w):
        raise ValueError(f"{n_concepts} concepts asked for, but NMF at layer {layer!r} can find at most "
                         f"{min(c, acts.shape[0] * h * w)} (its {c} channels); ask for fewer")
    A = acts.clamp_min(0).permute(0, 2, 3, 1).reshape(-1, c).double().cpu().numpy()
    nmf = NMF(n_components=n_concepts, init="nndsvda", random_state=seed, max_iter=500)
    U = nmf.fit_transform(A)
    Wn = torch.from_numpy(nmf.components_)  # (k, C)
    per_crop = torch.from_numpy(U).reshape(len(crops), h * w, n_concepts).mean(1)  # (crops, k)

    x = normalize(images)
    importance, coeffs = _occlusion_importance(model, x, layer, target, nmf, Wn, batch_size)
    names = [f"nmf_{j}" for j in range(n_concepts)]
    orders = {nm: per_crop[:, j].argsort(descending=True, stable=True) for j, nm in enumerate(names)}
    concept_sets = {nm: xc[orders[nm][:max_patches]] for nm in names}
    if randoms is None:
        randoms = _random_sets_from(xc, runs, max_patches, seed)
    tc = run_tcav(model, x, concept_sets, randoms, [layer], target, features="mean", batch_size=batch_size,
                  seed=seed, significance=significance)
    side = max(2, int(round(min(H, W) * sum(scale) / 2)))
    concepts = []
    for j, nm in enumerate(names):
        r = tc.get(nm, layer)
        pos_src, pos_boxes = _peak_boxes(coeffs[..., j], H, W, side)
        order = torch.arange(len(pos_src))[:top]
        examples = torch.stack([F.interpolate(images[i:i + 1, :, int(b[1]):int(b[3]), int(b[0]):int(b[2])],
                                              size=(H, W), mode="bilinear", align_corners=False)[0]
                                for i, b in zip(pos_src[:top].tolist(), pos_boxes[:top])])
        concepts.append(DiscoveredConcept(nm, float(importance[j]), r.score, r.p_value, r.significant,
                                          _patch_json(pos_src, pos_boxes, order, top), int(max_patches),
                                          int(len(torch.unique(src[orders[nm][:max_patches]]))), examples))
    concepts.sort(key=lambda cpt: -cpt.importance)
    return DiscoveryResult(tc.target, layer, "nmf", concepts, tc,
                           {"n_concepts": n_concepts, "crops_per_image": crops_per_image, "scale": list(scale),
                            "runs": runs, "seed": seed, "importance": "occlusion of the concept coefficient"})


def _peak_boxes(coeff: torch.Tensor, H: int, W: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ranked by their largest coefficient (N, h, w) and a ``side`` px box around that position."""
    n, h, w = coeff.shape
    peak, where = coeff.reshape(n, -1).max(1)
    order = peak.argsort(descending=True, stable=True)
    cy = (where // w).double().add(0.5).mul(H / h)
    cx = (where % w).double().add(0.5).mul(W / w)
    x0 = (cx - side / 2).round().clamp(0, W - side)
    y0 = (cy - side / 2).round().clamp(0, H - side)
    boxes = torch.stack([x0, y0, x0 + side, y0 + side], 1).float()
    return order, boxes[order]


def _occlusion_importance(model: nn.Module, x: torch.Tensor, layer: str, target: Target, nmf: Any,
                          components: torch.Tensor, batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean drop of the target score when each concept's part U[:, k] W[k] is removed at ``layer``, and the
    coefficients U of the images' positions (N, h, w, k)."""
    k = components.shape[0]
    bs = rows_per_pass(batch_size, model_device(model))
    drops = torch.zeros(k, dtype=torch.float64)
    coeffs = []
    n = x.shape[0]
    target = check_target(target, n)
    with frozen(model):
        for sl in chunks(n, bs):
            xb = x[sl]
            base = model(xb)
            t = split_target(target, sl)
            idx = target_indices(base, t)
            s0 = target_scores(base, t, idx).double()
            acts = compute_activations(model, xb, [layer], batch_size=xb.shape[0])[layer]
            b_, c_, h_, w_ = acts.shape
            pos = acts.clamp_min(0).permute(0, 2, 3, 1).reshape(-1, c_).double().cpu().numpy()
            coeffs.append(torch.from_numpy(nmf.transform(pos)).reshape(b_, h_, w_, k))
            for j in range(k):
                def remove(a: torch.Tensor, j: int = j) -> torch.Tensor:
                    b_, c_, h_, w_ = a.shape
                    pos = a.clamp_min(0).permute(0, 2, 3, 1).reshape(-1, c_).double().cpu().numpy()
                    u = torch.from_numpy(nmf.transform(pos))[:, j]
                    part = (u[:, None] * components[j][None]).reshape(b_, h_, w_, c_).permute(0, 3, 1, 2)
                    return a - part.to(a.dtype).to(a.device)

                with patched(model, layer, remove):
                    out = model(xb)
                drops[j] += (s0 - target_scores(out, t, idx).double()).sum().cpu()
    return drops / n, torch.cat(coeffs)
