"""`interpretorch gandissect`: GAN Dissection of a generator's layers, with ablation / insertion per concept."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from interpretorch.cli.common import UserError, check_device, fraction, output_dir, positive_int
from interpretorch.runstate import lock_output

if TYPE_CHECKING:
    from interpretorch.gan.models import GANPair

NAME = "gandissect"
HELP = ("label each unit of a generator's layers by IoU with a segmentation of its images (GAN Dissection), and "
        "switch each concept's units off and on")


def add_gan_arguments(p: argparse.ArgumentParser) -> None:
    """The flags both GAN commands share: the generator, the segmenter, the samples and the output folder."""
    p.add_argument("--generator", default=None,
                   help="package.module:factory giving a z -> image module (default: the shipped DCGAN)")
    p.add_argument("--segmenter", default=None,
                   help="package.module:factory giving an image -> (B, K, H, W) logits module "
                        "(default: the shipped segmenter; required with --generator)")
    p.add_argument("--classes", default=None,
                   help="comma-separated names of the segmenter's K classes (default: its class_names attribute)")
    p.add_argument("--z-shape", default=None,
                   help="shape of one latent sample, e.g. 128 or 512,1,1 (default: the generator's z_shape or "
                        "z_dim attribute)")
    p.add_argument("--samples", type=positive_int, default=1000,
                   help="seeded latent samples to dissect (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="latent sample stream of the dissection (default: 0)")
    p.add_argument("--quantile", type=fraction, default=0.01,
                   help="top quantile of each unit's activations that forms its region (default: %(default)s)")
    p.add_argument("--iou", type=fraction, default=0.04, help="IoU of a concept detector (default: %(default)s)")
    p.add_argument("--intervention-samples", type=positive_int, default=200,
                   help="samples (a separate seeded stream) each intervention is measured on (default: %(default)s)")
    p.add_argument("--value", type=float, default=0.0, help="value ablated units are set to (default: 0)")
    p.add_argument("--report-units", type=positive_int, default=32,
                   help="units shown with their top samples per layer in the report, best IoU first "
                        "(default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="latent samples through the generator per call (default 8 on the CPU, 64 on a GPU)")


def _z_shape(text: str | None, generator: object) -> tuple[int, ...]:
    if text:
        try:
            shape = tuple(int(v) for v in text.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise UserError(f"--z-shape must be positive integers separated by commas, got {text!r}")
        return shape
    for attr in ("z_shape", "z_dim"):
        v = getattr(generator, attr, None)
        if isinstance(v, int) and v > 0:
            return (v,)
        if isinstance(v, (tuple, list)) and v and all(isinstance(x, int) and x > 0 for x in v):
            return tuple(v)
    raise UserError("the generator has no z_shape or z_dim attribute; give --z-shape (e.g. --z-shape 128)")


def _check_pair(gen: torch.nn.Module, seg: torch.nn.Module, z_shape: tuple[int, ...], n_classes: int,
                device: torch.device) -> None:
    """One latent sample through the generator and its image through the segmenter: a UserError when they do not
    fit --z-shape or --classes."""
    from interpretorch.capture import frozen

    try:
        with torch.no_grad(), frozen(gen):
            image = gen(torch.zeros(1, *z_shape, device=device))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--z-shape {','.join(map(str, z_shape))} does not fit the generator: "
                        f"{type(e).__name__}: {first}") from None
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise UserError(f"the generator gives {getattr(image, 'shape', type(image).__name__)}, not (B, 3, H, W) "
                        "images")
    try:
        with torch.no_grad(), frozen(seg):
            logits = seg(image)
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"the segmenter cannot take the generator's images, shape {tuple(image.shape)}: "
                        f"{type(e).__name__}: {first}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4 or logits.shape[1] != n_classes:
        raise UserError(f"the segmenter gives {tuple(getattr(logits, 'shape', ()))}, not (B, {n_classes}, H, W) "
                        f"logits for the {n_classes} classes")


def load_pair(args: argparse.Namespace) -> GANPair:
    """The GANPair the flags name: the shipped one, or the user's generator and segmenter."""
    from interpretorch.gan.models import GANPair, shipped_pair
    from interpretorch.models import load_model

    device = check_device(args.device)
    if args.generator is None and args.segmenter is None:
        if args.classes or args.z_shape:
            raise UserError("--classes and --z-shape describe a user's --generator / --segmenter")
        return shipped_pair(device)
    if args.generator is None or args.segmenter is None:
        raise UserError("give both --generator and --segmenter (a user's generator needs a segmenter of its images)")
    from interpretorch.cli.common import allow_working_directory_imports

    allow_working_directory_imports()  # package.module:factory from here, after the installed packages
    models = {}
    for flag, spec in (("--generator", args.generator), ("--segmenter", args.segmenter)):
        if ":" not in spec:
            raise UserError(f"{flag} {spec!r}: expected package.module:factory")
        try:
            models[flag] = load_model(spec, device=device).model
        except (ImportError, AttributeError, TypeError, ValueError, FileNotFoundError):
            raise
        except Exception as e:  # a user's factory that raises is the user's error, said in one line
            raise UserError(f"{flag} {spec}: building it failed: {type(e).__name__}: {e}") from e
    gen, seg = models["--generator"], models["--segmenter"]
    if args.classes:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    else:
        classes = list(getattr(seg, "class_names", []) or [])
    if not classes:
        raise UserError("the segmenter has no class_names attribute; give --classes a,b,c (one per logit channel)")
    z_shape = _z_shape(args.z_shape, gen)
    _check_pair(gen, seg, z_shape, len(classes), device)
    cats = getattr(seg, "class_categories", None)
    return GANPair(gen, seg, z_shape, classes, list(cats) if cats else [], [], args.generator)


def parse_layers(text: str | None, pair: GANPair) -> list[str]:
    """The comma-separated --layers, or the pair's default (middle) layers."""
    from interpretorch.gan.dissect import default_layers

    if not text:
        return list(pair.layers) or default_layers(pair.generator, pair.z_shape)
    layers = [n.strip() for n in text.split(",") if n.strip()]
    if not layers:
        raise UserError("--layers is empty; give comma-separated layer names")
    return layers


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the gandissect flags."""
    add_gan_arguments(p)
    p.add_argument("--layers", default=None,
                   help="comma-separated generator layers (default: the shipped generator's middle layers "
                        "layer2,layer3, or a user generator's middle feature map)")
    p.add_argument("--units", type=positive_int, default=20,
                   help="units switched off / on per concept in the interventions (default: %(default)s, at most "
                        "a quarter of the layer)")
    p.add_argument("--no-interventions", action="store_true", help="dissect only (tally.csv, summary.json, report)")
    p.add_argument("--out", default="interpretorch-gandissect", help="output folder (default: %(default)s)")


def distributed(body: Callable[[argparse.Namespace, int], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``body(args, rank)`` inside the torchrun process group when launched by torchrun (left after)."""
    def run(args: argparse.Namespace) -> int:
        from interpretorch.datasets.distributed import init_from_env

        rank, world, args.device = init_from_env(args.device)
        try:
            return body(args, rank)
        finally:
            if world > 1 and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    run.__doc__ = body.__doc__
    return run


def run_and_write(args: argparse.Namespace, pair: GANPair, layers: list[str], concepts: list[str] | None,
                  k_for: Callable[[int], int], region: tuple[int, int, int, int] | None = None,
                  other: str | None = None, rank: int = 0) -> int:
    """Dissect ``layers`` (under torchrun: shared by the processes), run the interventions for ``concepts`` (all
    when None) and write every output (rank 0)."""
    out = output_dir(args.out)
    lock = lock_output(out)  # one writer per folder (FolderBusy: a one-line error)
    try:
        return _dissect_and_write(args, pair, out, layers, concepts, k_for, region, other, rank)
    finally:
        lock.release()


def _dissect_and_write(args: argparse.Namespace, pair: GANPair, out: Path, layers: list[str],
                       concepts: list[str] | None, k_for: Callable[[int], int],
                       region: tuple[int, int, int, int] | None, other: str | None, rank: int) -> int:
    """The body of :func:`run_and_write`, with ``out`` locked."""
    from interpretorch.dissect.report import file_stem
    from interpretorch.dissect.run import write_tally
    from interpretorch.gan.dissect import dissect_generator
    from interpretorch.gan.intervene import intervene
    from interpretorch.gan.report import write_gan_report, write_interventions

    result = dissect_generator(pair.generator, pair.segmenter, layers, pair.classes, categories=pair.categories,
                               z_shape=pair.z_shape, samples=args.samples, seed=args.seed, quantile=args.quantile,
                               iou_threshold=args.iou, batch_size=args.batch_size)
    if rank != 0:  # under torchrun the other processes helped with the dissection; rank 0 does the rest
        return 0
    tallies = {}
    for name, ld in result.layers.items():
        tallies[name] = write_tally(ld, out / f"{file_stem(name)}_tally.csv").name
        s = ld.summary()
        print(f"{name}: {s['detectors']}/{s['units']} units covering {s['unique_concepts']} concepts with IoU >= "
              f"{args.iou}")
    result.write_summary(out / "summary.json")
    items = []
    if concepts is None:
        total = result.concept_pixels
        concepts = [c for i, c in enumerate(result.classes) if int(total[i]) > 0]
    for name in layers:
        k = k_for(result.layers[name].units)
        for c in concepts:
            ci = intervene(pair.generator, pair.segmenter, result, name, c, z_shape=pair.z_shape, k=k,
                           samples=args.intervention_samples, seed=args.seed + 1, value=args.value, region=region,
                           other=other, batch_size=args.batch_size)
            items.append(ci)
            d = ci.to_dict()
            top, rnd = d["ablations"][0], d["ablations"][1]
            ins = d["insertion"]
            if top["removed"] is None:
                print(f"{name} {c}: {c} is absent from the {top['samples']} generated images (n=0): nothing to "
                      f"remove; inserted: {100 * ins['fraction_new_inside_region']:.1f}% of the new pixels inside "
                      "the region")
                continue
            print(f"{name} {c}: top {k} off removes {100 * top['removed']:.1f}% of its pixels "
                  f"(n={top['present']} of {top['samples']} images show it), {k} random "
                  f"{100 * rnd['removed']:.1f}%; inserted: {100 * ins['fraction_new_inside_region']:.1f}% of the "
                  "new pixels inside the region")
    if items or concepts == []:
        write_interventions(items, out / "interventions.json", result)
    write_gan_report(result, pair.generator, out, z_shape=pair.z_shape, interventions=items, model_name=pair.name,
                     max_units=args.report_units, batch_size=args.batch_size, tally_files=tallies)
    print(f"wrote {out}", file=sys.stderr)
    return 0


@distributed
def run(args: argparse.Namespace, rank: int = 0) -> int:
    """Dissect, intervene on every segmented concept, write tally CSVs, summary.json, interventions.json, report."""
    pair = load_pair(args)
    layers = parse_layers(args.layers, pair)

    def k_for(units: int) -> int:
        return max(1, min(args.units, units // 4))

    return run_and_write(args, pair, layers, [] if args.no_interventions else None, k_for, rank=rank)
