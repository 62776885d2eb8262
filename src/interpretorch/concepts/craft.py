"""CRAFT (Fel et al. 2023): concepts of a class by NMF of crop activations, ranked by Sobol importance, with maps.

1. **Concepts.** Random square crops of the class images, each resized to the model's input, go through the
   model up to a non-negative layer (the output of a ReLU or similar; a layer with negative values is refused,
   and without a layer the last non-negative feature map is chosen and named). Their activations, averaged over
   positions, form ``A`` (crops x channels) and non-negative matrix factorisation ``A ~ U W`` gives ``k``
   concept directions (the rows of ``W``).
2. **Importance.** For each class image the activation at every position is written in the concept basis
   (``u = argmin_{u >= 0} |a - u W|``, W fixed); the concepts' coefficients are multiplied by random masks
   ``m in [0, 1]^k`` (a scrambled Sobol quasi-Monte-Carlo design, the A / B / A_B^i matrices of Saltelli's
   scheme), the activations rebuilt as ``(u * m) W`` and sent through the rest of the model. The total-order
   Sobol index of concept i (Jansen's estimator, ``E[(f(A) - f(A_B^i))^2] / 2 Var f``) is the share of the
   variance of the class probability (softmax; ``score="logit"`` for the logit) that involves concept i; its
   mean over the class images is the concept's
   importance. All masked rows of all images are batched together.
3. **Maps.** A concept's attribution map on an image is its coefficient ``u_i`` at every position of the layer
   (where the concept is present), upsampled to the image like a CAM.
4. **Faithfulness.** The importances explain the model fed the *rebuilt* activations ``U W``, not the model
   itself; when the concepts rebuild the layer badly the two can disagree (on the concept CNN a basis from 2x
   zoomed crops rebuilt a dots image's patch so poorly that the rebuilt activations gave stripes on all 20 dots
   images). ``options["reconstruction"]`` says how close they are: the relative error of ``U W`` over all
   positions, the share of images whose rebuilt activations keep the model's predicted class, and the mean class
   score of both; a share below ``SAME_PREDICTION_WARN`` raises a warning and flags the report. It also gives the
   relative error of the NMF on the crops it was fitted to (``crop_fit_error``): a small one beside a large
   position error says the factorisation converged and the crops do not represent the images (too few crops, or
   crops zoomed so far that the layer sees the pattern differently), not that the NMF failed. On the concept CNN
   the crop fit was 0.030-0.043 in every run at k = 6, the same from five initialisations, eight restarts or
   20000 iterations, while the failing run's position error was 0.81 (``benchmarks/craft_options.py``).
5. **Recursion.** ``recursive_layer`` splits the most important concepts at an earlier layer: the crops where a
   concept dominates are factorised again at that layer into sub-concepts, whose Sobol importance is measured
   there with the rest of the activation kept (masks act on the sub-concepts' part only, since ``W'`` spans
   just the concept's crops).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.capture import frozen, patched, spatial_layers
from interpretorch.concepts.cache import compute_activations
from interpretorch.concepts.discovery import random_crop_boxes
from interpretorch.core import chunks, model_device, rows_per_pass
from interpretorch.models.layers import get_layer, tail_after


# Below this share of images whose rebuilt activations keep the model's predicted class, CRAFT warns that its
# importances explain a different function. On the concept CNN (measure_craft_crp.py, seeds 0-4, both classes,
# crops of 0.4-0.6 of the side) the share was 0.9-1.0 in 9 runs and 0.0 in the one whose importances missed the
# deciding concept with 8 crops per image; 0.9-1.0 in all ten with the default 32.
SAME_PREDICTION_WARN = 0.8


def sobol_design(k: int, nb_design: int, seed: int = 0) -> torch.Tensor:
    """Masks ((k + 2) * nb_design, k) in [0, 1]: rows A, then B, then A with column i taken from B, i = 1..k
    (a scrambled Sobol sequence in 2k dimensions; ``nb_design`` must be a power of two)."""
    from scipy.stats import qmc

    if k < 1:
        raise ValueError(f"need at least one concept, got {k}")
    if nb_design < 2 or nb_design & (nb_design - 1):
        raise ValueError(f"nb_design must be a power of two >= 2 (Sobol points), got {nb_design}")
    ab = qmc.Sobol(d=2 * k, scramble=True, seed=int(seed)).random(nb_design)
    a, b = ab[:, :k], ab[:, k:]
    cs = []
    for i in range(k):
        c = a.copy()
        c[:, i] = b[:, i]
        cs.append(c)
    return torch.from_numpy(np.concatenate([a, b] + cs)).double()


def jansen_total(outputs: torch.Tensor, k: int) -> torch.Tensor:
    """Total-order Sobol indices (k,) from the outputs (..., (k + 2) * nb_design) of :func:`sobol_design`'s rows
    (Jansen 1999): ``mean((f(A) - f(A_B^i))^2) / 2 / Var(f(A), f(B))``; leading axes are kept."""
    y = outputs.double()
    nd = y.shape[-1] // (k + 2)
    if nd * (k + 2) != y.shape[-1]:
        raise ValueError(f"{y.shape[-1]} outputs are not (k + 2) * nb_design rows for k = {k}")
    fa, fb = y[..., :nd], y[..., nd:2 * nd]
    fc = y[..., 2 * nd:].reshape(*y.shape[:-1], k, nd)
    var = torch.cat([fa, fb], -1).var(-1, unbiased=False)
    st = ((fa.unsqueeze(-2) - fc) ** 2).mean(-1) / 2
    return st / var.clamp_min(1e-300).unsqueeze(-1)


def sobol_total_indices(fn: Callable[[torch.Tensor], torch.Tensor], k: int, nb_design: int = 64, seed: int = 0
                        ) -> torch.Tensor:
    """Total-order Sobol indices of ``fn`` (masks (M, k) -> outputs (M,)) for k inputs uniform on [0, 1]."""
    return jansen_total(fn(sobol_design(k, nb_design, seed)), k)


@dataclass
class CraftConcept:
    """One concept: its Sobol importance (mean over images, with the std), the channel direction, its top crops
    (display images and (image, box)), and its maps on the shown images; sub-concepts found by recursion."""

    name: str
    layer: str
    importance: float
    importance_std: float
    direction: torch.Tensor
    crops: torch.Tensor
    crop_boxes: list[dict]
    maps: torch.Tensor
    sub_concepts: list["CraftConcept"] = field(default_factory=list)

    def to_json(self, image_names: Sequence[str] | None = None) -> dict:
        """The ``concepts.json`` entry."""
        crops = [{"image": image_names[c["image"]] if image_names else c["image"], "box": c["box"]}
                 for c in self.crop_boxes]
        return {"name": self.name, "layer": self.layer, "importance": self.importance,
                "importance_std": self.importance_std, "crops": crops,
                "sub_concepts": [s.to_json(image_names) for s in self.sub_concepts]}


@dataclass
class CraftResult:
    """Concepts ranked by importance; ``shown`` are the images whose maps each concept carries, ``coefficients``
    (N, k, h, w) every image's concept coefficients at the layer (concept order of ``concepts``)."""

    target: int
    layer: str
    concepts: list[CraftConcept]
    shown: list[int]
    coefficients: torch.Tensor
    options: dict = field(default_factory=dict)

    def to_json(self, image_names: Sequence[str] | None = None) -> dict:
        """The ``concepts.json`` structure."""
        return {"method": "craft", "target": self.target, "layer": self.layer, "options": self.options,
                "shown_images": [image_names[i] if image_names else i for i in self.shown],
                "concepts": [c.to_json(image_names) for c in self.concepts]}


def _layer_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Every named module's (B, C, h, w) output for ``x``, in the order the forward computes them."""
    names = list(dict.fromkeys(n for n, _ in spatial_layers(model, x)))
    acts = compute_activations(model, x, names, batch_size=x.shape[0])
    return [(n, acts[n]) for n in names]


def non_negative_layer(model: nn.Module, x: torch.Tensor, layer: str | None = None) -> str:
    """``layer`` if its activations on ``x`` are non-negative feature maps; else a clear error naming the nearest
    non-negative layer after it. Without ``layer``, the last non-negative (B, C, h, w) layer of the model whose
    maps are more than one position (a pooled 1 x 1 output has nowhere to show a concept)."""
    outs = _layer_outputs(model, x)
    ok = [n for n, t in outs if float(t.min()) >= 0]
    if layer is None:
        spread = [n for n, t in outs if n in ok and t.shape[-1] * t.shape[-2] > 1]
        ok = spread or ok
        if not ok:
            raise ValueError("no layer of the model gives non-negative (B, C, h, w) activations; CRAFT's NMF "
                             "needs one (e.g. the output of a ReLU)")
        return ok[-1]
    get_layer(model, layer)
    found = dict(outs)
    if layer not in found:
        raise ValueError(f"layer {layer!r} gives no (B, C, h, w) feature map; CRAFT needs one")
    low = float(found[layer].min())
    if low < 0:
        order = [n for n, _ in outs]
        after = [n for n in order[order.index(layer) + 1:] if n in ok]
        hint = f"; the next non-negative layer is {after[0]!r}" if after else ""
        raise ValueError(f"layer {layer!r} has negative activations (min {low:.3g}); CRAFT's NMF needs a "
                         f"non-negative layer, e.g. the output of a ReLU{hint}")
    return layer


def _crops(images: torch.Tensor, n_per: int, scale: tuple[float, float], seed: int
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, _, H, W = images.shape
    boxes = random_crop_boxes(n * n_per, H, W, scale, seed)
    src = torch.arange(n).repeat_interleave(n_per)
    crops = torch.stack([F.interpolate(images[i:i + 1, :, int(b[1]):int(b[3]), int(b[0]):int(b[2])], size=(H, W),
                                       mode="bilinear", align_corners=False)[0]
                         for i, b in zip(src.tolist(), boxes)])
    return crops, src, boxes


def _fit_nmf(acts: torch.Tensor, k: int, seed: int, layer: str, options: dict | None = None
             ) -> tuple[Any, torch.Tensor, float]:
    """The fitted NMF of the crops' (position-averaged) activations, their coefficients and the relative fit error."""
    from sklearn.decomposition import NMF

    a = acts.flatten(2).mean(2) if acts.dim() == 4 else acts
    if k > min(a.shape):
        raise ValueError(f"{k} concepts asked for at layer {layer!r}, but its {a.shape[1]} channels and "
                         f"{a.shape[0]} crops allow at most {min(a.shape)}; ask for fewer")
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    kw = {"init": "nndsvda", "random_state": int(seed), "max_iter": 1000, **(options or {})}
    nmf = NMF(n_components=k, **kw)
    x = a.clamp_min(0).double().cpu().numpy()
    with warnings.catch_warnings():  # the crop fit error, reported, says whether a near miss mattered
        warnings.simplefilter("ignore", ConvergenceWarning)
        u = nmf.fit_transform(x)
    fit = float(np.linalg.norm(u @ nmf.components_ - x) / max(float(np.linalg.norm(x)), 1e-300))
    return nmf, torch.from_numpy(u), fit


def _coefficients(nmf: Any, acts: torch.Tensor) -> torch.Tensor:
    """(N, k, h, w): every position's activation written in the concept basis (W fixed)."""
    n, c, h, w = acts.shape
    pos = acts.clamp_min(0).permute(0, 2, 3, 1).reshape(-1, c).double().cpu().numpy()
    u = torch.from_numpy(nmf.transform(pos)).reshape(n, h, w, -1)
    return u.permute(0, 3, 1, 2).contiguous()


def _tail(model: nn.Module, layer: str, x: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """f(activations at ``layer`` (M, C, h, w), image index per row (M,)) -> model outputs; the model's tail when
    its structure allows, else a full forward of the images with the layer's output replaced."""
    tail = tail_after(model, layer)
    if tail is not None:
        return lambda a, _rows: tail(a)

    def full(a: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        with patched(model, layer, lambda _out: a):
            return model(x[rows])
    return full


def _sobol_importance(model: nn.Module, x: torch.Tensor, layer: str, target: int, coeffs: torch.Tensor,
                      basis: torch.Tensor, residual: torch.Tensor | None, nb_design: int, seed: int, bs: int,
                      score: str = "probability") -> torch.Tensor:
    """(N, k) total-order Sobol indices of each concept for each image's class probability (or logit)."""
    n, k = coeffs.shape[:2]
    masks = sobol_design(k, nb_design, seed)  # (M, k)
    m = masks.shape[0]
    device = x.device
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    u = coeffs.to(device, dtype)
    w = basis.to(device, dtype)  # (k, C)
    mk = masks.to(device, dtype)
    f = _tail(model, layer, x)
    out = torch.empty(n * m, dtype=torch.float64)
    with frozen(model), torch.no_grad():
        for sl in chunks(n * m, bs):
            rows = torch.arange(n * m)[sl]
            img, mi = rows // m, rows % m
            part = torch.einsum("bkhw,bk,kc->bchw", u[img], mk[mi], w)
            if residual is not None:
                part = part + residual[img].to(device, dtype)
            y = f(part, img)
            if score == "probability":
                y = y.double().softmax(-1)
            out[sl] = y[:, target].double().cpu()
    return jansen_total(out.reshape(n, m), k)


def _reconstruction(model: nn.Module, x: torch.Tensor, layer: str, target: int, acts: torch.Tensor,
                    coeffs: torch.Tensor, basis: torch.Tensor, bs: int, score: str) -> dict:
    """How faithfully the concepts rebuild the layer: relative error of ``U W``, share of images whose rebuilt
    activations keep the model's predicted class, and the mean class score from the true and the rebuilt ones."""
    n = x.shape[0]
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    true = acts.double().cpu()
    rebuilt = torch.einsum("bkhw,kc->bchw", coeffs.double(), basis.double())
    err = float((rebuilt - true).norm() / true.norm().clamp_min(1e-300))
    f = _tail(model, layer, x)
    outs = []
    with frozen(model), torch.no_grad():
        for a in (true, rebuilt):
            ys = [f(a[sl].to(x.device, dtype), torch.arange(n)[sl]).double().cpu() for sl in chunks(n, bs)]
            outs.append(torch.cat(ys))
    same = float((outs[0].argmax(-1) == outs[1].argmax(-1)).double().mean())
    sc = [(o.softmax(-1) if score == "probability" else o)[:, target] for o in outs]
    return {"relative_error": err, "same_prediction": same, "model_score": float(sc[0].mean()),
            "reconstruction_score": float(sc[1].mean())}


def reconstruction_note(fidelity: dict, score: str = "probability") -> str:
    """The sentence saying the rebuilt activations disagree with the model (for the warning and the report)."""
    crop_fit = fidelity.get("crop_fit_error")
    fit = (f" The concepts fit the crops they were learned from (relative error {crop_fit:.2f}): the crops do not "
           f"represent the images' activations." if crop_fit is not None and crop_fit < 0.5 * fidelity["relative_error"]
           else "")
    return (f"only {fidelity['same_prediction']:.0%} of the images keep the model's predicted class when the layer is "
            f"rebuilt from the concepts (relative error {fidelity['relative_error']:.2f}; mean class {score} "
            f"{fidelity['model_score']:.2f} from the model, {fidelity['reconstruction_score']:.2f} rebuilt), so the "
            f"importances explain the rebuilt activations, not the model.{fit} Try more crops per image, crops "
            f"closer to the whole image (a scale near 1) or more concepts.")


def _upsample(coeff: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(coeff.float(), size=size, mode="bilinear", align_corners=False)


def craft(model: nn.Module, images: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor], target: int,
          layer: str | None = None, *, n_concepts: int = 6, crops_per_image: int = 32,
          scale: tuple[float, float] = (0.25, 0.5), nb_design: int = 32, top: int = 8, show: int = 6,
          recursive_layer: str | None = None, sub_concepts: int = 3, split: int = 2, seed: int = 0,
          score: str = "probability", batch_size: int | None = None, nmf_options: dict | None = None
          ) -> CraftResult:
    """CRAFT: ``n_concepts`` concepts of class ``target`` in ``images`` (N, 3, H, W) [0, 1] at a non-negative
    ``layer``, ranked by total-order Sobol importance, with their top crops and maps on ``show`` images;
    ``recursive_layer`` splits the ``split`` most important into ``sub_concepts`` at that earlier layer;
    ``nmf_options`` go to scikit-learn's ``NMF`` (e.g. ``init``, ``max_iter``, ``tol``).

    ``crops_per_image`` is 32: the concepts are learned from the crops alone, and with 8 per image (the earlier
    default) the concept CNN's deciding patch lay whole in only 7-23 of the 160 crops of 20 images and the concepts
    rebuilt the layer so that the model's class changed on most images in 2 of 30 runs (3 draws of 10); with 32,
    in none (``benchmarks/craft_options.py``). The authors' code takes a grid of 16 crops per image at its
    defaults and asks for 500 images or more."""
    if isinstance(target, bool) or not isinstance(target, int):
        raise TypeError(f"CRAFT explains one class: give its index as an int, got {target!r}")
    if score not in ("probability", "logit"):
        raise ValueError(f"score must be 'probability' or 'logit', got {score!r}")
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, 3, H, W) batch of images, got shape {tuple(images.shape)}")
    device = model_device(model)
    bs = rows_per_pass(batch_size, device)
    x = normalize(images).to(device)
    with frozen(model), torch.no_grad():
        n_out = model(x[:1]).shape[-1]
    if not 0 <= target < n_out:
        raise ValueError(f"target {target} is outside the model's {n_out} classes")
    layer = non_negative_layer(model, x[:2], layer)
    crops, src, boxes = _crops(images, crops_per_image, scale, seed)
    xc = normalize(crops).to(device)
    crop_acts = compute_activations(model, xc, [layer], batch_size=batch_size)[layer]
    if float(crop_acts.min()) < 0:
        raise ValueError(f"layer {layer!r} has negative activations on the crops (min {float(crop_acts.min()):.3g})")
    nmf, u_crops, crop_fit = _fit_nmf(crop_acts, n_concepts, seed, layer, nmf_options)
    basis = torch.from_numpy(nmf.components_)  # (k, C)
    acts = compute_activations(model, x, [layer], batch_size=batch_size)[layer]
    coeffs = _coefficients(nmf, acts)  # (N, k, h, w)
    fidelity = _reconstruction(model, x, layer, target, acts, coeffs, basis, bs, score)
    fidelity["crop_fit_error"] = crop_fit
    if fidelity["same_prediction"] < SAME_PREDICTION_WARN:
        import warnings

        warnings.warn(f"CRAFT: {reconstruction_note(fidelity, score)}", stacklevel=2)
    st = _sobol_importance(model, x, layer, target, coeffs, basis, None, nb_design, seed, bs, score)  # (N, k)
    shown = list(range(min(show, images.shape[0])))
    maps = _upsample(coeffs[shown], images.shape[-2:])  # (S, k, H, W)
    concepts = []
    for j in range(n_concepts):
        order = u_crops[:, j].argsort(descending=True, stable=True)[:top]
        concepts.append(CraftConcept(f"concept_{j}", layer, float(st[:, j].mean()), float(st[:, j].std()),
                                     basis[j].float(), crops[order],
                                     [{"image": int(src[i]), "box": [float(v) for v in boxes[i].tolist()]}
                                      for i in order.tolist()], maps[:, j]))
    rank = sorted(range(n_concepts), key=lambda j: -concepts[j].importance)
    ranked = [concepts[j] for j in rank]
    if recursive_layer is not None:
        _split(model, images, normalize, x, layer, recursive_layer, ranked[:split], [rank[i] for i in range(split)],
               u_crops, crops, src, boxes, target, sub_concepts, nb_design, top, shown, seed, batch_size, bs, score,
               nmf_options)
    return CraftResult(target, layer, ranked, shown, coeffs[:, rank],
                       {"n_concepts": n_concepts, "crops_per_image": crops_per_image, "scale": list(scale),
                        "nb_design": nb_design, "seed": seed, "nmf_options": dict(nmf_options or {}),
                        "recursive_layer": recursive_layer, "score": score,
                        "sub_concepts": sub_concepts if recursive_layer else None, "reconstruction": fidelity,
                        "importance": f"total-order Sobol index of the class {score} (Jansen), mean over images",
                        "maps": "the concept's coefficient at each position of the layer, upsampled"})


def _split(model, images, normalize, x, layer, lower, parents, parent_idx, u_crops, crops, src, boxes, target,
           k_sub, nb_design, top, shown, seed, batch_size, bs, score, nmf_options=None) -> None:
    """Factorise each parent concept's dominant crops at ``lower`` and attach the sub-concepts to it."""
    order = [n for n, _ in _layer_outputs(model, x[:1])]
    if lower not in order:
        raise ValueError(f"recursive layer {lower!r} gives no (B, C, h, w) feature map")
    if order.index(lower) >= order.index(layer):
        raise ValueError(f"recursive layer {lower!r} must come before {layer!r}")
    non_negative_layer(model, x[:2], lower)
    dominant = u_crops.argmax(1)
    xc = normalize(crops).to(x.device)
    acts_img = compute_activations(model, x, [lower], batch_size=batch_size)[lower]
    for parent, j in zip(parents, parent_idx):
        members = torch.nonzero(dominant == j).flatten()
        if members.numel() < k_sub:  # too few dominant crops: take the crops of largest coefficient instead
            members = u_crops[:, j].argsort(descending=True, stable=True)[:max(4 * k_sub, 8)]
        acts = compute_activations(model, xc[members], [lower], batch_size=batch_size)[lower]
        nmf, u_sub, _fit = _fit_nmf(acts, min(k_sub, members.numel()), seed, lower, nmf_options)
        basis = torch.from_numpy(nmf.components_)
        coeffs = _coefficients(nmf, acts_img)
        recon = torch.einsum("bkhw,kc->bchw", coeffs, basis)
        residual = acts_img.double().cpu() - recon
        st = _sobol_importance(model, x, lower, target, coeffs, basis, residual, nb_design, seed, bs, score)
        maps = _upsample(coeffs[shown], images.shape[-2:])
        subs = []
        for s in range(basis.shape[0]):
            o = u_sub[:, s].argsort(descending=True, stable=True)[:top]
            picked = members[o]
            subs.append(CraftConcept(f"{parent.name}.{s}", lower, float(st[:, s].mean()), float(st[:, s].std()),
                                     basis[s].float(), crops[picked],
                                     [{"image": int(src[i]), "box": [float(v) for v in boxes[i].tolist()]}
                                      for i in picked.tolist()], maps[:, s]))
        parent.sub_concepts = sorted(subs, key=lambda c: -c.importance)


def map_energy_inside(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Per map (N, H, W), the share of its positive mass inside the box (N, 4) x0, y0, x1, y1."""
    m = maps.clamp_min(0).double()
    inside = torch.zeros_like(m, dtype=torch.bool)
    for i, b in enumerate(boxes.round().long().tolist()):
        inside[i, b[1]:b[3], b[0]:b[2]] = True
    total = m.flatten(1).sum(1).clamp_min(1e-300)
    return (m * inside).flatten(1).sum(1) / total


__all__ = ["SAME_PREDICTION_WARN", "CraftConcept", "CraftResult", "craft", "jansen_total", "map_energy_inside",
           "non_negative_layer", "reconstruction_note", "sobol_design", "sobol_total_indices"]
