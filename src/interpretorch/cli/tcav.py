"""``interpretorch tcav``: TCAV scores of a class for concepts (folders or generated), with significance tests."""
from __future__ import annotations

import argparse
from pathlib import Path

from interpretorch.cli.common import (UserError, add_model_arguments, load_model_from_args, output_dir,
                                      parse_target, positive_int)

MIN_RUNS = 3  # R random sets give R-1 distinct random-vs-random runs (R=2: one), and the t-test needs 2 per side


def significance_runs(text: str) -> int:
    """argparse type for --runs: enough random runs for the t-test (at least MIN_RUNS)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < MIN_RUNS:
        raise argparse.ArgumentTypeError(f"the significance test needs at least {MIN_RUNS} random runs, got {v}")
    return v

NAME = "tcav"
HELP = "TCAV: how much a class depends on human concepts (image folders or generated patterns), with p-values"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Class images, concepts, random sets, layers, the CAV and test options, and the shared model flags."""
    p.add_argument("--images", nargs="+", required=True, help="folders or files of the class's images")
    p.add_argument("--target", type=parse_target, required=True, help="the class index to explain")
    p.add_argument("--concepts", nargs="+", required=True,
                   help="concept image folders, or generator names (stripes, zigzag, dots, checker, solid, "
                        "texture, solid_red, ...)")
    p.add_argument("--random", nargs="+", required=True,
                   help="random image folders, one set each; with a single folder, --runs sets are drawn from it")
    p.add_argument("--layers", required=True, help="comma-separated layer names (`interpretorch layers` lists them)")
    p.add_argument("--runs", type=significance_runs, default=10,
                   help="random runs when one --random folder is given, at least 3 (default: %(default)s)")
    p.add_argument("--set-size", type=positive_int, default=50,
                   help="images per generated concept and per random set drawn from one folder (default: %(default)s)")
    p.add_argument("--loss", choices=("hinge", "logistic"), default="hinge",
                   help="CAV classifier: hinge (SGD, as the original TCAV) or logistic (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.01, help="L2 strength of the CAV classifier (default: %(default)s)")
    p.add_argument("--features", choices=("flatten", "mean"), default="flatten",
                   help="CAV features: flattened activations (original) or channel means (default: %(default)s)")
    p.add_argument("--significance", type=float, default=0.05, help="test level (default: %(default)s)")
    p.add_argument("--correction", choices=("holm", "bonferroni", "bh", "none"), default="holm",
                   help="multiple-comparison correction over all concept tests of the run (default: %(default)s)")
    p.add_argument("--bonferroni", action="store_true", help="same as --correction bonferroni")
    p.add_argument("--seed", type=int, default=0, help="seed for splits, SGD and drawn sets (default: %(default)s)")
    p.add_argument("--cache", default=None, help="activation cache folder (default: OUT/cache)")
    add_model_arguments(p)
    p.add_argument("--out", default="interpretorch-tcav", help="output folder (default: %(default)s)")


def image_files(path: str) -> list[Path]:
    """The images under ``path`` (a file or a folder), or a UserError when there are none."""
    from interpretorch.models.preprocess import find_images

    files = find_images([path])
    if not files:
        raise UserError(f"no images found in {path!r}")
    return files


def load_images(files: list[Path], preprocess) -> "torch.Tensor":  # noqa: F821
    """``files`` as display images in [0, 1] through ``preprocess``, or a UserError naming an unreadable one."""
    from interpretorch.models.preprocess import ImageLoadError

    try:
        return preprocess.display([str(f) for f in files])
    except ImageLoadError as e:
        raise UserError(str(e)) from None


def _announce(model, x, concepts, randoms, layers, cache, pre, batch_size) -> None:
    """Print what the run will cost (``concepts.estimate.estimate_tcav``, with one concept map per concept);
    never stops the run: a bad argument is left to the run to refuse in one line."""
    import sys

    from interpretorch.cli.estimate import say
    from interpretorch.concepts.estimate import estimate_tcav

    try:
        say(estimate_tcav(model, x, concepts, randoms, layers, cache=cache, preprocess=pre, batch_size=batch_size,
                          concept_maps=len(concepts)))
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        pass
    except Exception as e:  # an estimate must never stop a run
        print(f"interpretorch: no estimate ({type(e).__name__}: {e})", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run TCAV and write tcav.json, tcav_details.json and index.html into --out."""
    import torch

    from interpretorch.concepts.cache import ActivationCache
    from interpretorch.concepts.generate import concept_set, generator_names, random_sets
    from interpretorch.concepts.maps import concept_maps
    from interpretorch.concepts.report import write_tcav_report
    from interpretorch.concepts.tcav import run_tcav

    if len(args.random) == 2:
        raise UserError(f"--random: the significance test needs one folder (drawn --runs times) or at least "
                        f"{MIN_RUNS} folders, got 2")
    out = output_dir(args.out)
    if args.cache:
        output_dir(args.cache, "--cache")
    layers = [s.strip() for s in args.layers.split(",") if s.strip()]
    if not layers:
        raise UserError("--layers is empty; give comma-separated layer names")
    loaded = load_model_from_args(args)
    model, pre = loaded.model, loaded.preprocess
    from interpretorch.models.layers import get_layer

    for layer in layers:
        try:
            get_layer(model, layer)
        except KeyError as e:
            raise UserError(str(e.args[0])) from None
    class_files = [f for d in args.images for f in image_files(d)]
    class_display = load_images(class_files, pre)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = pre.normalize(class_display).to(device)

    concepts: dict = {}
    for spec in args.concepts:
        path = Path(spec)
        if path.exists():
            name = path.name or str(path)
            concepts[name] = image_files(spec)
        else:
            if spec.strip().lower() not in {g.lower() for g in generator_names()} and not spec.startswith("solid_"):
                raise UserError(f"--concepts {spec!r} is neither a folder nor a generator; generators: "
                                f"{', '.join(generator_names())}")
            try:
                concepts[spec] = pre.normalize(concept_set(spec, args.set_size, pre.size, seed=args.seed))
            except ValueError as e:
                raise UserError(str(e)) from None
    if len(args.random) == 1:
        files = image_files(args.random[0])
        imgs = pre.normalize(load_images(files, pre))
        per_set = min(args.set_size, len(files))
        randoms = {f"random_{i}": s for i, s in enumerate(random_sets(imgs, args.runs, per_set, args.seed))}
    else:
        randoms = {f"random_{i}": image_files(d) for i, d in enumerate(args.random)}
    cache = ActivationCache(args.cache or out / "cache")
    _announce(model, x, concepts, randoms, layers, cache, pre, args.batch_size)
    result = run_tcav(model, x, concepts, randoms, layers, args.target, cache=cache, preprocess=pre,
                      batch_size=args.batch_size, loss=args.loss, alpha=args.alpha, features=args.features,
                      seed=args.seed, significance=args.significance, bonferroni=args.bonferroni,
                      correction=args.correction)
    # concept maps at the last layer: the mean direction of each concept's runs, on its top-projecting images
    maps = {}
    layer = layers[-1]
    R = len(result.randoms)
    vec = result.cavs.vectors[layer]
    for ci, c in enumerate(result.concepts):
        v = vec[ci * R:(ci + 1) * R].mean(0)
        v = v / v.norm().clamp_min(1e-12)
        m = concept_maps(model, x, v, layer, features=args.features, batch_size=args.batch_size)[:, 0]
        top = m.flatten(1).sum(1).argsort(descending=True)[:6]
        maps[c] = (class_display[top.cpu()], m[top].cpu(), layer, top.tolist())
    names = loaded.class_names
    class_name = (f"{args.target} ({names[args.target]})" if isinstance(args.target, int)
                  and 0 <= args.target < len(names) and names[args.target] != f"class {args.target}" else None)
    paths = write_tcav_report(result, out, concept_maps=maps, image_names=[str(f) for f in class_files],
                              title=f"TCAV of class {class_name or args.target}", class_name=class_name)
    for r in result.results:
        print(f"{r.layer:24s} {r.concept:20s} score {r.score:.3f} +- {r.score_std:.3f}  "
              f"random {r.random_score:.3f}  p={r.p_value:.3g} ({result.options['correction']})  {r.direction}")
    for flag in result.flags():
        print(f"flag: {flag['text']}")
    print(result.headline(class_name))
    print(f"wrote {paths['json']} and {paths['html']}")
    return 0
