"""``interpretorch discover``: find the concepts a class depends on (ACE segments or NMF), ranked, with patches."""
from __future__ import annotations

import argparse

from interpretorch.cli.common import (UserError, add_model_arguments, load_model_from_args, output_dir,
                                      parse_target, positive_int)
from interpretorch.cli.tcav import significance_runs

NAME = "discover"
HELP = "discover the concepts a class depends on (ACE or NMF), ranked by importance, shown by their top patches"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Class images, target, layer, the method and its options, and the shared model flags."""
    p.add_argument("--images", nargs="+", required=True, help="folders or files of the class's images")
    p.add_argument("--target", type=parse_target, required=True, help="the class index to explain")
    p.add_argument("--layer", required=True, help="the layer whose activations hold the concepts")
    p.add_argument("--method", choices=("nmf", "ace"), default="nmf",
                   help="nmf: factorise crops' activations (CRAFT-style); ace: cluster superpixels "
                        "(default: %(default)s)")
    p.add_argument("--concepts", type=positive_int, default=None,
                   help="number of concepts (NMF, default 6) or clusters (ACE, default 25)")
    p.add_argument("--random", nargs="*", default=None,
                   help="random image folder(s) for the TCAV significance test (default: random patches of the "
                        "class images)")
    p.add_argument("--runs", type=significance_runs, default=10, help="random runs, at least 3 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    add_model_arguments(p)
    p.add_argument("--out", default="interpretorch-concepts", help="output folder (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Discover concepts and write concepts.json and index.html into --out."""
    from interpretorch.cli.tcav import image_files, load_images
    from interpretorch.concepts.discovery import ace, nmf_concepts
    from interpretorch.concepts.generate import random_sets
    from interpretorch.concepts.report import write_discovery_report
    from interpretorch.models.layers import get_layer

    out = output_dir(args.out)
    loaded = load_model_from_args(args)
    model, pre = loaded.model, loaded.preprocess
    try:
        get_layer(model, args.layer)
    except KeyError as e:
        raise UserError(str(e.args[0])) from None
    files = [f for d in args.images for f in image_files(d)]
    images = load_images(files, pre)
    device = next((p.device for p in model.parameters()), None)

    def normalize(t):
        return pre.normalize(t).to(device) if device is not None else pre.normalize(t)

    randoms = None
    if args.random:
        rfiles = [f for d in args.random for f in image_files(d)]
        pool = normalize(load_images(rfiles, pre))
        randoms = random_sets(pool, args.runs, min(40, len(rfiles)), args.seed)
    if args.method == "ace":
        result = ace(model, images, normalize, args.layer, args.target, randoms=randoms, runs=args.runs,
                     n_clusters=args.concepts or 25, seed=args.seed, batch_size=args.batch_size)
    else:
        result = nmf_concepts(model, images, normalize, args.layer, args.target, n_concepts=args.concepts or 6,
                              randoms=randoms, runs=args.runs, seed=args.seed, batch_size=args.batch_size)
    paths = write_discovery_report(result, out, image_names=[str(f) for f in files],
                                   title=f"Concepts of class {args.target} ({args.method})")
    for i, c in enumerate(result.concepts, 1):
        mark = "" if c.significant else " (n.s.)"
        print(f"{i:2d}. {c.name:12s} importance {c.importance:.3f}  TCAV {c.score:.3f}{mark}  p={c.p_value:.3g}")
    print(f"wrote {paths['json']} and {paths['html']}")
    return 0
