"""HTML report of a GAN dissection: per layer the unit labels and IoUs (with each top unit's samples, its region
outlined), and per concept the same samples before and after ablating its units and after inserting them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from jinja2 import Environment, PackageLoader, select_autoescape
from torch import nn

from interpretorch.capture import capture
from interpretorch.core import model_device, rows_per_pass
from interpretorch.core import flags as red
from interpretorch.dissect.report import draw_outline, file_stem
from interpretorch.report.answer import ANSWER_CSS, answer_html
from interpretorch.gan.dissect import GANDissection, sample_z
from interpretorch.gan.intervene import ConceptInterventions

SCALE = 3  # generated images are small: show them 3x larger


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) images -> (N, H, W, 3) uint8, mapping [-1, 1] (or [0, 1] when no value is negative)."""
    x = images.detach().float().cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x[:, :3]
    if float(x.min()) < 0:
        x = (x + 1) / 2
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _big(img: np.ndarray) -> np.ndarray:
    return img.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def _tile(img: np.ndarray, mask: np.ndarray | None, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    out = _big(img).copy()
    if mask is not None:
        draw_outline(out, _big_mask(mask))
    if box is not None:
        x0, y0, x1, y1 = (v * SCALE for v in box)
        out[y0, x0:x1] = out[y1 - 1, x0:x1] = (0, 200, 255)
        out[y0:y1, x0] = out[y0:y1, x1 - 1] = (0, 200, 255)
    return out


def _big_mask(m: np.ndarray) -> np.ndarray:
    return m.repeat(SCALE, axis=0).repeat(SCALE, axis=1)


def _row(tiles: Sequence[np.ndarray]) -> np.ndarray:
    gap = np.full((tiles[0].shape[0], 3, 3), 255, np.uint8)
    return np.concatenate([x for t in tiles for x in (t, gap)][:-1], axis=1)


def _grid(rows: Sequence[np.ndarray]) -> np.ndarray:
    gap = np.full((3, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=0)


def _save(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def unit_strips(generator: nn.Module, dissection: GANDissection, layer: str, units: Sequence[int],
                z_shape: Sequence[int], out_dir: Path, *, batch_size: int | None = None) -> dict[int, str]:
    """Write, per unit, a strip of its top-activating samples with its thresholded region outlined."""
    ld = dissection.layers[layer]
    wanted = sorted({int(i) for u in units for i in ld.top_indices[u].tolist() if i >= 0})
    if not wanted:
        return {}
    z = sample_z(max(wanted) + 1, z_shape, dissection.seed)[wanted]
    device = model_device(generator)
    bs = rows_per_pass(batch_size, device)
    acts, imgs = [], []
    with capture(generator, [layer], grad=False) as rec:
        for i in range(0, len(z), bs):
            rec.calls.clear()
            imgs.append(generator(z[i:i + bs].to(device)).cpu())
            acts.append(rec[layer][:, list(units)].float().cpu())
    images, a = torch.cat(imgs), torch.cat(acts)
    pics = to_uint8(images)
    up = F.interpolate(a, size=images.shape[-2:], mode="bilinear", align_corners=False)
    row_of = {s: r for r, s in enumerate(wanted)}
    out = {}
    for pos, u in enumerate(units):
        t = float(ld.thresholds[u])
        tiles = []
        for s in (int(v) for v in ld.top_indices[u].tolist() if v >= 0):
            r = row_of[s]
            tiles.append(_tile(pics[r], (up[r, pos] > t).numpy()))
        name = f"{file_stem(layer)}_files/unit{u:04d}.png"
        _save(_row(tiles), out_dir / name)
        out[u] = name
    return out


def intervention_grid(ci: ConceptInterventions, out_dir: Path) -> str:
    """Write the before / ablated (top, random) / inserted grid of one concept; returns its relative path."""
    rows = []
    region = ci.insertion.region if ci.insertion is not None else None
    for key in ("before", "top", "random", "insert"):
        if key not in ci.images:
            continue
        pics = to_uint8(ci.images[key])
        masks = ci.masks[key].numpy()
        rows.append(_row([_tile(p, m, region if key == "insert" else None) for p, m in zip(pics, masks)]))
    name = f"{file_stem(ci.layer)}_files/{file_stem(ci.concept)}_interventions.png"
    _save(_grid(rows), out_dir / name)
    return name


def intervention_answer(ci: dict, ious: dict[int, float] | None = None, iou_threshold: float | None = None
                        ) -> tuple[str, list[dict]]:
    """One concept's intervention numbers (``ConceptInterventions.to_dict()``) as a headline sentence and red
    flags: random units removing as much as the concept's units, an ACE interval that includes zero, units below
    the detector IoU (``ious``: IoU of each top unit), and an insertion that misses its region."""
    where = f"{ci['concept']} at {ci['layer']}"
    abl = {a["kind"]: a for a in ci["ablations"]}
    top, rnd = abl.get("top"), abl.get("random")
    flags: list = []
    if top is None:
        return f"{where}: no ablation measured.", flags
    if top["removed"] is None:
        return f"{where}: the concept appears in none of the {top['samples']} samples; nothing to remove.", flags
    lo, hi = top["removed_band95"]
    text = (f"{where}: switching off its {ci['k']} top units removes {100 * top['removed']:.1f}% "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] of its pixels (n = {top['samples']} samples)")
    if rnd is not None and rnd["removed"] is not None:
        text += f", {ci['k']} random units {100 * rnd['removed']:.1f}%"
        flags.append(red.random_beats_targeted(f"removing {where}", 100 * top["removed"], 100 * rnd["removed"],
                                               unit="%"))
    ins = ci.get("insertion")
    if ins is not None:
        text += (f"; inserting them puts {100 * ins['fraction_new_inside_region']:.0f}% of the new pixels inside a "
                 f"region of {100 * ins['region_share_of_image']:.0f}% of the image")
        flags.append(red.insertion_outside(f"inserting {where}", ins["fraction_new_inside_region"],
                                           ins["region_share_of_image"]))
    flags.append(red.includes_zero(f"the change of {where}'s pixel share when its top units are off (ACE)",
                                   top["ace"], *top["ace_band95"]))
    if ious and iou_threshold is not None:
        flags.append(red.below_detector(where, [ious[u] for u in top["units"] if u in ious], iou_threshold))
    return text + ".", [f for f in flags if f]


def interventions_json(items: Sequence[ConceptInterventions], dissection: GANDissection | None = None
                       ) -> list[dict]:
    """Each concept's numbers with its ``headline`` and ``flags`` (the structure of interventions.json)."""
    out = []
    for ci in items:
        d = ci.to_dict()
        ious, thr = None, None
        if dissection is not None and ci.layer in dissection.layers and ci.concept in dissection.classes:
            ld = dissection.layers[ci.layer]
            col = dissection.classes.index(ci.concept) + 1
            ious = {u: float(ld.iou[u, col]) for u in range(ld.units)}
            thr = dissection.iou_threshold
        d["headline"], d["flags"] = intervention_answer(d, ious, thr)
        out.append(d)
    return out


def write_interventions(items: Sequence[ConceptInterventions], path: str | Path,
                        dissection: GANDissection | None = None) -> Path:
    """Write interventions.json: per layer and concept the ablation and insertion numbers, a headline and the
    red flags (with ``dissection``, also the units' IoU against the detector threshold)."""
    path = Path(path)
    path.write_text(json.dumps(interventions_json(items, dissection), indent=2))
    return path


def gan_answer(dissection: GANDissection, numbers: Sequence[dict]) -> tuple[str, list[dict]]:
    """The GAN page's headline (detectors per layer, then each intervention's sentence) and its flags."""
    parts = []
    for name, ld in dissection.layers.items():
        s = ld.summary()
        parts.append(f"{name}: {s['detectors']} of {s['units']} units are detectors (IoU \u2265 "
                     f"{s['iou_threshold']:g}) for {s['unique_concepts']} concept(s) over {dissection.samples} samples")
    text = "; ".join(parts) + "."
    if numbers:
        text += " " + " ".join(d["headline"] for d in numbers)
    return text, [f for d in numbers for f in d["flags"]]


def write_gan_report(dissection: GANDissection, generator: nn.Module, out_dir: str | Path, *, z_shape: Sequence[int],
                     interventions: Sequence[ConceptInterventions] = (), model_name: str = "generator",
                     max_units: int = 32, batch_size: int | None = None,
                     tally_files: dict[str, str] | None = None) -> Path:
    """Write ``out_dir/index.html`` and its images; returns the page's path. The generator is left unchanged."""
    out = Path(out_dir)
    layers = []
    for name, ld in dissection.layers.items():
        (out / f"{file_stem(name)}_files").mkdir(parents=True, exist_ok=True)
        label, score = ld.best()
        cat_of = ld.tally.label_category.cpu()
        order = sorted(range(ld.units), key=lambda u: (-float(score[u]), u))
        strips = unit_strips(generator, dissection, name, order[:max_units], z_shape, out, batch_size=batch_size)
        units = [{"unit": u, "label": ld.label_names[label[u]], "category": ld.categories[int(cat_of[label[u]])],
                  "iou": float(score[u]), "threshold": float(ld.thresholds[u]),
                  "detector": float(score[u]) >= ld.iou_threshold, "strip": strips.get(u)} for u in order]
        concepts = [{"concept": c, "top": [(u, float(ld.iou[u, i + 1])) for u in
                                           dissection.top_units(name, c, min(5, ld.units))]}
                    for i, c in enumerate(dissection.classes)]
        layers.append({"name": name, "s": ld.summary(), "units": units, "concepts": concepts,
                       "tally": (tally_files or {}).get(name, f"{file_stem(name)}_tally.csv")})
    cards = []
    numbers = interventions_json(interventions, dissection)
    for ci, d in zip(interventions, numbers):
        (out / f"{file_stem(ci.layer)}_files").mkdir(parents=True, exist_ok=True)
        cards.append({"concept": ci.concept, "layer": ci.layer, "k": ci.k, "grid": intervention_grid(ci, out),
                      "numbers": d})
    headline, flags = gan_answer(dissection, numbers)
    env = Environment(loader=PackageLoader("interpretorch.gan", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    share = dissection.summary()["concept_pixel_share"]
    html = env.get_template("gan.html").render(
        model_name=model_name, samples=dissection.samples, seed=dissection.seed, quantile=dissection.quantile,
        iou_threshold=dissection.iou_threshold, layers=layers, cards=cards, share=share, scale=SCALE,
        answer=answer_html(headline, flags), answer_css=ANSWER_CSS)
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    return page

