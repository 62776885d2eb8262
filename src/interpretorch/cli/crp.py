"""``interpretorch crp``: where in each image the concepts (channels) of a layer mattered for the class (CRP)."""
from __future__ import annotations

import argparse

from interpretorch.cli.common import (UserError, add_model_arguments, collect_images, load_model_from_args,
                                      output_dir, parse_target, positive_int)

NAME = "crp"
HELP = ("concept relevance propagation: per image, where each of a layer's most relevant channels mattered for "
        "the class, attribution graphs and reference images chosen by relevance")
COMPOSITES = ("epsilon_plus", "epsilon_gamma_box", "epsilon_alpha2_beta1", "excitation_backprop")


def _channels(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--channels must be comma-separated channel indices, got {text!r}") from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"--channels must be non-negative channel indices, got {text!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Images, layer, which channels, graph and reference options, and the shared model flags."""
    p.add_argument("images", nargs="*", help="image files or folders (default: the bundled sample photos)")
    p.add_argument("--layer", required=True, help="the layer whose channels are the concepts")
    p.add_argument("--target", type=parse_target, default="top1",
                   help="top1, a class index, or one index per image (default: %(default)s)")
    p.add_argument("--channels", type=_channels, default=None,
                   help="comma-separated channels to condition on (default: each image's --top most relevant)")
    p.add_argument("--top", type=positive_int, default=4, help="most relevant channels shown per image")
    p.add_argument("--composite", choices=COMPOSITES, default="epsilon_plus", help="the LRP composite")
    p.add_argument("--graph", default=None, metavar="LAYERS",
                   help="comma-separated lower layers (highest first): the attribution graph of each image's most "
                        "relevant channel through them")
    p.add_argument("--graph-top", type=positive_int, default=3, help="lower concepts kept per node of a graph")
    p.add_argument("--reference", default=None, metavar="DIR",
                   help="a folder of images to choose each shown channel's reference images from, by relevance")
    p.add_argument("--reference-top", type=positive_int, default=6, help="reference images per channel")
    p.add_argument("--resume", action="store_true",
                   help="continue the reference-image pass from its checkpoint in --out")
    add_model_arguments(p)
    p.add_argument("--out", default="interpretorch-crp", help="output folder (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Compute the conditional relevances and write crp.json and index.html into --out."""
    import torch

    from interpretorch.attribution.crp import attribution_graph, conditional_relevance, reference_images
    from interpretorch.concepts.report import write_crp_report
    from interpretorch.models.layers import get_layer

    out = output_dir(args.out)
    loaded = load_model_from_args(args)
    model, pre = loaded.model, loaded.preprocess
    lower = [n.strip() for n in args.graph.split(",") if n.strip()] if args.graph else []
    for name in [args.layer, *lower]:
        try:
            get_layer(model, name)
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
    names, arrays, failed = collect_images(args.images)
    if not arrays:
        raise UserError("no readable image to explain")
    display = pre.display(arrays)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = pre.normalize(display).to(device)
    target = args.target
    if isinstance(target, list) and len(target) != len(arrays):
        raise UserError(f"--target gives {len(target)} classes for {len(arrays)} images; give one per image")
    everything = conditional_relevance(model, x, target, args.layer, [[0]], composite=args.composite,
                                       batch_size=args.batch_size)
    channels = everything.channel_relevance.shape[1]
    if args.channels and max(args.channels) >= channels:
        raise UserError(f"--channels {max(args.channels)} is outside layer {args.layer!r}'s {channels} channels")
    results, graphs, plains = [], [], []
    for i in range(len(arrays)):
        t = target[i] if isinstance(target, list) else target
        chosen = args.channels or everything.channel_relevance[i].argsort(descending=True)[:args.top].tolist()
        res = conditional_relevance(model, x[i:i + 1], t, args.layer, [int(c) for c in chosen],
                                    composite=args.composite, batch_size=args.batch_size)
        plain = conditional_relevance(model, x[i:i + 1], t, args.layer, [list(range(channels))],
                                      composite=args.composite)
        plains.append(plain.heatmaps[:, 0])
        results.append(res)
        if lower:
            graphs.append(attribution_graph(model, x[i:i + 1], t, [args.layer, *lower], int(chosen[0]),
                                            top=args.graph_top, composite=args.composite))
    references = None
    if args.reference:
        references = _references(args, model, pre, device, sorted({c for r in results for c in r.conditions}), out)
    paths = write_crp_report(results, display, out, plain=plains, image_names=names,
                             class_names=loaded.class_names,
                             graphs=graphs, references=references,
                             title=f"Concept relevance at {args.layer} ({args.model})")
    for name, r in zip(names, results):
        total = float(r.channel_relevance[0].sum())
        parts = ", ".join(f"channel {c} {float(v) / total:.0%}" if total else f"channel {c}"
                          for c, v in zip(r.conditions, r.concept_relevance[0]))
        print(f"{name}: class {int(r.target[0]) if r.target is not None else '-'}: {parts}")
    print(f"wrote {paths['json']} and {paths['html']}")
    return 1 if failed else 0


def _references(args: argparse.Namespace, model, pre, device, channels: list, out) -> dict:
    """Stream the --reference folder once (resumable): per shown channel its images by relevance, with the map
    of where the channel mattered, and its images by activation."""
    import torch

    from interpretorch.attribution.crp import conditional_relevance, reference_images
    from interpretorch.cli.tcav import image_files
    from interpretorch.core.batching import rows_per_pass
    from interpretorch.runstate import files_fingerprint

    files = image_files(args.reference)
    bs = rows_per_pass(args.batch_size, device)

    def load(idx: list[int]) -> torch.Tensor:
        return pre.normalize(pre.display([str(files[i]) for i in idx])).to(device)

    def batches():
        for s in range(0, len(files), bs):
            idx = list(range(s, min(s + bs, len(files))))
            yield torch.tensor(idx), load(idx), "top1"

    try:
        ref = reference_images(model, batches(), args.layer, n=args.reference_top, composite=args.composite,
                               checkpoint=out / "reference_checkpoint.pt", resume=args.resume,
                               fingerprint=files_fingerprint(files))
    except ValueError as e:
        raise UserError(str(e)) from None
    shown = {}
    for c in channels:
        if not isinstance(c, int):
            continue
        rel_idx = [int(i) for i in ref.relevance_indices[c].tolist() if i >= 0]
        act_idx = [int(i) for i in ref.activation_indices[c].tolist() if i >= 0]
        xr = load(rel_idx)
        maps = conditional_relevance(model, xr, "top1", args.layer, [c], composite=args.composite).heatmaps[:, 0]
        shown[c] = ((pre.display([str(files[i]) for i in rel_idx]), maps),
                    pre.display([str(files[i]) for i in act_idx]))
    return shown
