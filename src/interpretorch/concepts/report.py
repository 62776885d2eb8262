"""Write TCAV and discovery results: ``tcav.json`` / ``concepts.json``, figures and an HTML page."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from interpretorch.concepts.discovery import DiscoveryResult
from interpretorch.concepts.tcav import TCAVResult
from interpretorch.core import flags as red
from interpretorch.report.answer import ANSWER_CSS, answer_html, colorbar_html, map_range


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("interpretorch.concepts", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = lambda v, d=3: "-" if v is None else (f"{v:.{d}g}" if isinstance(v, float) else v)
    return env


def _save_png(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"{path.parent.name}/{path.name}"


def score_figure(result: TCAVResult, path: Path) -> str:
    """Bars of TCAV scores per layer with run std error bars, the random baseline band, and significance marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = result.layers
    concepts = result.concepts
    fig, axes = plt.subplots(1, len(layers), figsize=(max(4.0, 1.0 + 0.9 * len(concepts)) * len(layers), 3.4),
                             squeeze=False)
    for ax, layer in zip(axes[0], layers):
        rows = [result.get(c, layer) for c in concepts]
        xs = np.arange(len(rows))
        colours = [{"significantly above random": "tab:blue", "significantly below random": "tab:orange"}.get(
            r.direction, "lightgray") for r in rows]
        ax.bar(xs, [r.score for r in rows], yerr=[r.score_std for r in rows], color=colours, capsize=3,
               edgecolor="black", linewidth=0.5)
        base = rows[0].random_score
        ax.axhspan(base - rows[0].random_std, base + rows[0].random_std, color="tab:red", alpha=0.12)
        ax.axhline(base, color="tab:red", lw=1, ls="--")
        for x, r in zip(xs, rows):
            mark = {"significantly above random": "* above", "significantly below random": "* below"}.get(
                r.direction, "n.s.")
            ax.text(x, min(1.02, r.score + r.score_std + 0.03), mark, ha="center", fontsize=8 if r.significant else 7)
        ax.set_xticks(xs)
        ax.set_xticklabels(concepts, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.12)
        ax.set_title(f"{layer} (red: random runs, mean +- std)", fontsize=8)
        ax.set_ylabel("TCAV score")
    return _save_png(fig, path)


def concept_map_figure(images: torch.Tensor, maps: torch.Tensor, title: str, path: Path) -> dict:
    """A row of images with their concept maps overlaid on one scale for the row (from 0 to the maximum, or
    symmetric at the 99th percentile of |value| when the maps are signed); returns the figure's path and its
    colour bar's HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    values = maps.detach().cpu().float().numpy()
    lo, hi = map_range(values)
    cmap = "bwr" if lo < 0 else "jet"
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.8), squeeze=False)
    for ax, img, m in zip(axes[0], images, values):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, alpha=0.45)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    what = ("projection on the CAV, signed, clipped at the 99th percentile of |value|" if lo < 0 else
            "projection on the CAV, from 0 to its maximum") + ", one scale for the row"
    return {"figure": _save_png(fig, path), "cbar": colorbar_html(lo, hi, cmap, what)}


def patches_figure(patches: torch.Tensor, title: str, path: Path) -> str:
    """A row of a concept's top patches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, patches.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(1.2 * n, 1.4), squeeze=False)
    for ax, p in zip(axes[0], patches):
        ax.imshow(p.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    return _save_png(fig, path)


def write_tcav_report(result: TCAVResult, out_dir: str | Path, *, concept_maps: dict | None = None,
                      image_names: Sequence[str] | None = None, title: str = "TCAV",
                      class_name: str | None = None) -> dict[str, Path]:
    """Write ``tcav.json``, ``tcav_details.json``, figures and ``index.html`` into ``out_dir``.

    ``concept_maps`` maps a concept name to (display images (k, 3, H, W), maps (k, H, W), layer, image indices).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json(class_name)
    (out / "tcav.json").write_text(json.dumps(data, indent=2))
    (out / "tcav_details.json").write_text(json.dumps(result.details_json(), indent=2))
    fig = score_figure(result, out / "figures" / "scores.png")
    maps = []
    for i, (concept, (imgs, m, layer, idx)) in enumerate((concept_maps or {}).items()):
        names = [image_names[j] if image_names else str(j) for j in idx]
        maps.append({"concept": concept, "layer": layer, "images": names,
                     **concept_map_figure(imgs, m, f"{concept} at {layer}", out / "figures" / f"map_{i}.png")})
    rows = [r for r in result.results]
    html = _env().get_template("tcav.html").render(title=title, r=result, rows=rows, figure=fig, maps=maps,
                                                    options=result.options, data=data,
                                                    answer=answer_html(data["headline"], data["flags"]),
                                                    answer_css=ANSWER_CSS)
    (out / "index.html").write_text(html, encoding="utf-8")
    return {"json": out / "tcav.json", "html": out / "index.html", "details": out / "tcav_details.json"}


def write_discovery_report(result: DiscoveryResult, out_dir: str | Path, *, image_names: Sequence[str] | None = None,
                           title: str = "Discovered concepts") -> dict[str, Path]:
    """Write ``concepts.json``, one patch figure per concept and ``index.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json(image_names)
    data["headline"], data["flags"] = discovery_answer(result)
    for c in data["concepts"]:
        c["direction"] = _direction(result, c["name"])
    (out / "concepts.json").write_text(json.dumps(data, indent=2))
    shown = []
    for i, c in enumerate(result.concepts):
        fig = None
        if c.examples is not None and len(c.examples):
            fig = patches_figure(c.examples, c.name, out / "figures" / f"concept_{i}.png")
        shown.append({"c": c, "json": data["concepts"][i], "figure": fig})
    html = _env().get_template("discover.html").render(title=title, r=result, concepts=shown,
                                                        answer=answer_html(data["headline"], data["flags"]),
                                                        answer_css=ANSWER_CSS)
    (out / "index.html").write_text(html, encoding="utf-8")
    return {"json": out / "concepts.json", "html": out / "index.html"}


SIGNED_STRIP = "each map on its own scale: \u00b1 the 99th percentile of its |value| (white: 0)"
UNSIGNED_STRIP = "each map on its own scale: from 0 to its maximum"


def _overlay_strip(images: torch.Tensor, maps: torch.Tensor, title: str, path: Path, signed: bool | None = None
                   ) -> dict:
    """A row of images with one map each overlaid, each map on its own scale (signed: bwr, symmetric at the 99th
    percentile of |value|; else jet from 0 to the maximum; ``signed`` None: signed when any map has a negative
    value); returns the figure's path and its colour bar's HTML."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = maps.detach().cpu().float()
    if signed is None:
        signed = bool(values.numel() and float(values.min()) < 0)
    n = max(1, images.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(1.5 * n, 1.7), squeeze=False)
    for ax, img, m in zip(axes[0], images, values):
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        lo, hi = map_range(m.numpy(), signed=signed)
        ax.imshow(m.numpy(), cmap="bwr" if signed else "jet", vmin=lo, vmax=hi, alpha=0.6 if signed else 0.45)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    bar = (colorbar_html("-p99", "+p99", "bwr", SIGNED_STRIP) if signed else
           colorbar_html(0.0, "max", "jet", UNSIGNED_STRIP))
    return {"figure": _save_png(fig, path), "cbar": bar}


def write_craft_report(result: "CraftResult", images: torch.Tensor, out_dir: str | Path, *,  # noqa: F821
                       image_names: Sequence[str] | None = None, title: str = "CRAFT concepts",
                       relevance: "ConditionalRelevance | None" = None) -> dict[str, Path]:  # noqa: F821
    """Write ``concepts.json`` and ``index.html`` (concepts ranked by Sobol importance, each with its top crops and
    its maps on the shown images; sub-concepts under their concept) into ``out_dir``. ``relevance``: a
    :class:`~interpretorch.attribution.crp.ConditionalRelevance` of the shown images with one condition per concept
    (its direction, in the ranked order), drawn as where each concept mattered for the class."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = result.to_json(image_names)
    if relevance is not None:
        if relevance.heatmaps.shape[:2] != (len(result.shown), len(result.concepts)):
            raise ValueError(f"relevance has {tuple(relevance.heatmaps.shape[:2])} (images, conditions); the result "
                             f"shows {len(result.shown)} images of {len(result.concepts)} concepts")
        for j, c in enumerate(data["concepts"]):
            c["relevance_along_direction"] = [float(v) for v in relevance.concept_relevance[:, j]]
    data["headline"], data["flags"] = craft_answer(data, int(result.coefficients.shape[0]))
    (out / "concepts.json").write_text(json.dumps(data, indent=2))
    shown = images[result.shown]

    def item(c, key: str, j: dict, rank: int | None = None) -> dict:
        return {"c": c, "json": j,
                "crops": patches_figure(c.crops, f"{c.name}: top crops", out / "figures" / f"{key}_crops.png"),
                "maps": _overlay_strip(shown, c.maps, f"{c.name}: where it is present",
                                       out / "figures" / f"{key}_maps.png", signed=False),
                "relevance": (_overlay_strip(shown, relevance.heatmaps[:, rank],
                                             f"{c.name}: where it mattered (CRP along its direction)",
                                             out / "figures" / f"{key}_relevance.png", signed=True)
                              if relevance is not None and rank is not None else None),
                "subs": [item(s, f"{key}_{k}", js) for k, (s, js) in enumerate(zip(c.sub_concepts,
                                                                                      j["sub_concepts"]))]}
    concepts = [item(c, f"concept{i}", data["concepts"][i], i) for i, c in enumerate(result.concepts)]
    names = [image_names[i] if image_names else str(i) for i in result.shown]
    html = _env().get_template("craft.html").render(title=title, r=result, concepts=concepts, shown=names,
                                                     n_images=int(result.coefficients.shape[0]),
                                                     answer=answer_html(data["headline"], data["flags"]),
                                                     answer_css=ANSWER_CSS)
    (out / "index.html").write_text(html, encoding="utf-8")
    return {"json": out / "concepts.json", "html": out / "index.html"}


def write_crp_report(results: Sequence, images: torch.Tensor, out_dir: str | Path, *,
                     plain: Sequence[torch.Tensor], image_names: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                     graphs: Sequence | None = None, references: dict | None = None,
                     title: str = "Concept relevance (CRP)") -> dict[str, Path]:
    """Write ``crp.json`` and ``index.html`` from one :class:`ConditionalRelevance` per image: its class, the
    plain LRP map (``plain[i]``, (1, H, W)) and, per condition, where it mattered (its conditional relevance) with its share of the class
    relevance at the layer; attribution graphs and reference images (by relevance and by activation) when
    given (``references``: channel -> ((images, maps), activation images))."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [image_names[i] if image_names else str(i) for i in range(images.shape[0])]
    rows = []
    for i, res in enumerate(results):
        maps = res.heatmaps[0]
        k = maps.shape[0]
        channels = res.channel_relevance[0]
        total = float(channels.sum())
        top = int(channels.argmax())
        labels = [f"channel {c}" if isinstance(c, int) else f"channels {c}" if isinstance(c[0], int)
                  else "direction" for c in res.conditions]
        fig = _overlay_strip(images[i:i + 1].expand(k + 1, -1, -1, -1),
                             torch.cat([plain[i][0:1], maps]),
                             f"{names[i]}: LRP, then " + ", ".join(labels), out / "figures" / f"image{i}.png",
                             signed=True)
        t = None if res.target is None else int(res.target[0])
        rows.append({"name": names[i], "figure": fig["figure"], "cbar": fig["cbar"], "target": t,
                     "top_channel": top, "top_share": float(channels[top]) / total if total else None,
                     "class_name": class_names[t] if class_names and t is not None and t < len(class_names) else None,
                     "score": float(res.scores[0]), "total": total,
                     "conditions": [{"label": lab, "condition": c, "relevance": float(res.concept_relevance[0, j]),
                                     "share": float(res.concept_relevance[0, j]) / total if total else None}
                                    for j, (lab, c) in enumerate(zip(labels, res.conditions))]})
    refs = []
    for ch, ((rel_imgs, rel_maps), act_imgs) in (references or {}).items():
        refs.append({"channel": ch,
                     "relevance": _overlay_strip(rel_imgs, rel_maps, f"channel {ch}: by relevance, where it mattered",
                                                 out / "figures" / f"ref{ch}_rel.png", signed=True),
                     "activation": patches_figure(act_imgs, f"channel {ch}: by activation",
                                                  out / "figures" / f"ref{ch}_act.png")})
    layer = results[0].layer if results else None
    data = {"layer": layer, "images": [{k: v for k, v in r.items() if k not in ("figure", "cbar")} for r in rows],
            "graphs": [g.to_json() for g in graphs or []],
            "options": {k: v for k, v in (results[0].extras if results else {}).items()}}
    data["headline"], data["flags"] = crp_answer(data)
    (out / "crp.json").write_text(json.dumps(data, indent=2))
    html = _env().get_template("crp.html").render(title=title, layer=layer, rows=rows, graphs=data["graphs"],
                                                   refs=refs, options=data["options"],
                                                   answer=answer_html(data["headline"], data["flags"]),
                                                   answer_css=ANSWER_CSS)
    (out / "index.html").write_text(html, encoding="utf-8")
    return {"json": out / "crp.json", "html": out / "index.html"}


def crp_answer(data: dict) -> tuple[str, list[dict]]:
    """The CRP page's headline (per image, the shown channels' shares of the class relevance at the layer) and
    its red flags (layer relevance that does not sum to the class score; no channel with a large share)."""
    parts, unconserved, spread = [], [], []
    for im in data["images"]:
        cls = im["class_name"] or (f"class {im['target']}" if im["target"] is not None else "its score")
        shares = ", ".join(f"{c['label']} {100 * c['share']:.0f}%" if c["share"] is not None else c["label"]
                           for c in im["conditions"])
        parts.append(f"{im['name']} ({cls}): {shares}")
        unconserved.append(red.not_conserved(im["name"], im["total"], im["score"]))
        spread.append(red.small_share(im["name"], im["top_share"], f"channel {im['top_channel']}"))
    head = (f"Share of the class relevance at {data['layer']} carried by the channels shown: " + "; ".join(parts)
            + ".") if parts else f"No image explained at {data['layer']}."
    return head, _merge(unconserved, len(parts)) + _merge(spread, len(parts))


def _merge(flags: list, n: int) -> list[dict]:
    """One flag for several images raising the same rule: the first image's sentence with the count of the others
    (each image's numbers stay in ``images``)."""
    raised = [f for f in flags if f]
    if len(raised) <= 1:
        return raised
    first = raised[0]
    return [{**first, "text": f"{first['text']} The same holds on {len(raised) - 1} more of the {n} images "
                              f"({', '.join(f['what'] for f in raised[1:])}).",
             "images": [{k: v for k, v in f.items() if k not in ("code", "text")} for f in raised]}]


def craft_answer(data: dict, n_images: int) -> tuple[str, list[dict]]:
    """The CRAFT page's headline (concepts ranked by Sobol total-order importance with their values) and its red
    flags (an importance outside [0, 1]: estimator noise; few images behind the means; concepts that rebuild the
    layer so badly that the model's prediction changes)."""
    from interpretorch.concepts.craft import SAME_PREDICTION_WARN, reconstruction_note

    designs = int(data.get("options", {}).get("nb_design", 0))
    cs = data["concepts"]
    ranked = "; ".join(f"{c['name']} {c['importance']:.2f} \u00b1 {c['importance_std']:.2f}" for c in cs)
    head = (f"Concepts of class {data['target']} at {data['layer']} by Sobol total-order importance (mean \u00b1 "
            f"std over {n_images} image(s), {designs} designs): {ranked}." if cs else
            f"No concept found for class {data['target']} at {data['layer']}.")
    values = {c["name"]: c["importance"] for c in cs}
    values.update({s["name"]: s["importance"] for c in cs for s in c["sub_concepts"]})
    flags = [red.estimate_out_of_range("a total-order Sobol index (mean over images)", values, designs),
             red.few_images("each concept's mean importance", n_images)]
    fidelity = data.get("options", {}).get("reconstruction")
    if fidelity and fidelity["same_prediction"] < SAME_PREDICTION_WARN:
        note = reconstruction_note(fidelity, data["options"].get("score", "probability"))
        flags.append(red.flag("unfaithful_reconstruction", f"Unfaithful concepts: {note}", **fidelity))
    return head, [f for f in flags if f]


def _direction(result: DiscoveryResult, name: str) -> str:
    """The direction-aware TCAV label of a discovered concept (``"not significant"`` without a TCAV run)."""
    if result.tcav is None:
        return "not significant"
    try:
        return result.tcav.get(name, result.layer).direction
    except KeyError:
        return "not significant"


def discovery_answer(result: DiscoveryResult) -> tuple[str, list[dict]]:
    """The discovery page's headline (how many concepts raise or lower the class's score, and whether the most
    important one does) and its red flags (the TCAV run's, e.g. a degenerate layer)."""
    k = len(result.concepts)
    dirs = {c.name: _direction(result, c.name) for c in result.concepts}
    up = [c.name for c in result.concepts if dirs[c.name] == "significantly above random"]
    down = [c.name for c in result.concepts if dirs[c.name] == "significantly below random"]
    text = (f"{k} concept(s) found at {result.layer} ({result.method}); {len(up)} raise the class's score "
            f"significantly (TCAV above random{', ' + ', '.join(up) if up else ''}), {len(down)} lower it"
            f"{' (' + ', '.join(down) + ')' if down else ''}, {k - len(up) - len(down)} are not significant.")
    flags: list = []
    if result.concepts:
        top = result.concepts[0]
        text += f" The most important, {top.name}, is {dirs[top.name]} (TCAV {top.score:.2f}, p = {top.p_value:.2g})."
        if top.name not in up and (up or down):
            flags.append(red.flag("importance_disagrees",
                                  f"Importance and TCAV disagree: the most important concept ({top.name}) is "
                                  f"{dirs[top.name]}, while {', '.join(up + down)} "
                                  f"{'is' if len(up + down) == 1 else 'are'} significant.",
                                  concept=top.name))
    if result.tcav is not None:
        flags += result.tcav.flags()
    return text, flags
