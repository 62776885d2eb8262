"""``interpretorch discover``: find the concepts a class depends on (ACE segments or NMF), ranked, with patches."""
from __future__ import annotations

import argparse

from interpretorch.cli.common import (UserError, add_model_arguments, load_model_from_args, output_dir,
                                      parse_target, positive_int)
from interpretorch.cli.tcav import significance_runs

NAME = "discover"
HELP = ("discover the concepts a class depends on (CRAFT, ACE or NMF), ranked by importance, shown by their top "
        "patches")


def _crop_scale(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--crop-scale must be LOW,HIGH fractions, got {text!r}") from None
    if not 0 < low <= high <= 1:
        raise argparse.ArgumentTypeError(f"--crop-scale needs 0 < LOW <= HIGH <= 1, got {text!r}")
    return low, high


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Class images, target, layer, the method and its options, and the shared model flags."""
    p.add_argument("--images", nargs="+", required=True, help="folders or files of the class's images")
    p.add_argument("--target", type=parse_target, required=True, help="the class index to explain")
    p.add_argument("--layer", default=None,
                   help="the layer whose activations hold the concepts (needed for nmf and ace; craft without it "
                        "takes the last non-negative feature map and says which)")
    p.add_argument("--method", choices=("nmf", "ace", "craft"), default="nmf",
                   help="nmf: factorise crops' activations, occlusion importance; ace: cluster superpixels; craft: "
                        "NMF of crops with Sobol importance and concept maps (default: %(default)s)")
    p.add_argument("--recursive", default=None, metavar="LAYER",
                   help="craft: split the most important concepts again at this earlier layer")
    p.add_argument("--sub-concepts", type=positive_int, default=3, help="craft --recursive: sub-concepts per concept")
    p.add_argument("--split", type=positive_int, default=2, help="craft --recursive: how many concepts to split")
    p.add_argument("--crop-scale", default="0.25,0.5", type=_crop_scale,
                   help="craft: the side of a random crop as a fraction of the image's, LOW,HIGH")
    p.add_argument("--crops-per-image", type=positive_int, default=32,
                   help="craft: random crops taken from each image to learn the concepts from (default: %(default)s; "
                        "with 8 a small concept was often cut by every crop)")
    p.add_argument("--designs", type=positive_int, default=32,
                   help="craft: quasi-Monte-Carlo designs of the Sobol estimate, a power of two")
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
    if args.method != "craft" and args.layer is None:
        raise UserError(f"--method {args.method} needs --layer (interpretorch layers lists them)")
    if args.method != "craft" and args.recursive:
        raise UserError("--recursive is a craft option; add --method craft")
    if args.designs & (args.designs - 1):
        raise UserError(f"--designs must be a power of two (Sobol points), got {args.designs}")
    for name in (args.layer, args.recursive):
        try:
            if name is not None:
                get_layer(model, name)
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
    files = [f for d in args.images for f in image_files(d)]
    images = load_images(files, pre)
    device = next((p.device for p in model.parameters()), None)

    def normalize(t):
        return pre.normalize(t).to(device) if device is not None else pre.normalize(t)

    if args.method == "craft":
        return _run_craft(args, model, images, normalize, files, out)
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


def _run_craft(args: argparse.Namespace, model, images, normalize, files, out) -> int:
    """CRAFT: concepts ranked by Sobol importance, their crops and maps, written to concepts.json and index.html."""
    from interpretorch.concepts.craft import craft
    from interpretorch.concepts.report import write_craft_report

    if not isinstance(args.target, int):
        raise UserError("--method craft explains one class: give --target as one class index")
    result = craft(model, images, normalize, args.target, args.layer, n_concepts=args.concepts or 6,
                   crops_per_image=args.crops_per_image, scale=args.crop_scale, nb_design=args.designs,
                   recursive_layer=args.recursive,
                   sub_concepts=args.sub_concepts, split=args.split, seed=args.seed, batch_size=args.batch_size)
    if args.layer is None:
        print(f"layer {result.layer} (the last non-negative feature map; CRAFT's NMF needs non-negative "
              "activations)")
    from interpretorch.attribution.crp import conditional_relevance
    from interpretorch.core import model_device

    shown = normalize(images[result.shown]).to(model_device(model))
    relevance = conditional_relevance(model, shown, args.target, result.layer,
                                      [c.direction for c in result.concepts], batch_size=args.batch_size)
    paths = write_craft_report(result, images, out, image_names=[str(f) for f in files],
                               title=f"CRAFT concepts of class {args.target}", relevance=relevance)
    fid = result.options["reconstruction"]
    print(f"rebuilt from the concepts, {result.layer} keeps the model's predicted class on "
          f"{fid['same_prediction']:.0%} of the images (relative error {fid['relative_error']:.2f})")
    for i, c in enumerate(result.concepts, 1):
        print(f"{i:2d}. {c.name:12s} Sobol importance {c.importance:.3f} +- {c.importance_std:.3f}")
        for s in c.sub_concepts:
            print(f"      {s.name:12s} at {s.layer}: {s.importance:.3f} +- {s.importance_std:.3f}")
    print(f"wrote {paths['json']} and {paths['html']}")
    return 0
