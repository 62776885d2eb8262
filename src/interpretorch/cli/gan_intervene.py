"""`interpretorch gan-intervene`: switch a concept's units of one generator layer off and on, beside random units."""
from __future__ import annotations

import argparse
import re

from interpretorch.cli.common import UserError, positive_int
from interpretorch.cli.gandissect import add_gan_arguments, distributed, load_pair, run_and_write

NAME = "gan-intervene"
HELP = ("ablate a concept's top units of a generator layer (beside random units and another concept's units) and "
        "insert them in a region")


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 (four integers, image pixels), got {text!r}")
    if min(vals) < 0 or vals[0] >= vals[2] or vals[1] >= vals[3]:
        raise argparse.ArgumentTypeError(f"expected a box x0,y0,x1,y1 of image pixels with 0 <= x0 < x1 and "
                                         f"0 <= y0 < y1, got {text!r}")
    return vals  # type: ignore[return-value]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the gan-intervene flags."""
    p.add_argument("--layer", required=True, help="the generator layer whose units are switched")
    p.add_argument("--concept", required=True, help="the segmenter's class whose units are switched")
    p.add_argument("--units", type=positive_int, required=True, help="how many of the concept's top units (k)")
    # "-4,0,8,8" is a value of --region (refused by _region), not an unknown option
    p._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-?\d+(,-?\d+)+$")  # noqa: SLF001
    p.add_argument("--region", type=_region, default=None,
                   help="x0,y0,x1,y1 box in image pixels where the units are inserted (default: the central quarter)")
    p.add_argument("--other", default=None,
                   help="the other concept whose top k units are ablated for comparison (default: the most common)")
    add_gan_arguments(p)
    p.add_argument("--out", default="interpretorch-gan-intervene", help="output folder (default: %(default)s)")


@distributed
def run(args: argparse.Namespace, rank: int = 0) -> int:
    """Dissect the layer, intervene on the concept, write tally.csv, interventions.json and the report."""
    pair = load_pair(args)
    if args.concept not in pair.classes:
        raise UserError(f"--concept {args.concept!r} is not a class of the segmenter; classes: {pair.classes}")
    if args.other is not None and (args.other not in pair.classes or args.other == args.concept):
        raise UserError(f"--other {args.other!r} must be another class of the segmenter: {pair.classes}")
    return run_and_write(args, pair, [args.layer], [args.concept], lambda units: args.units, region=args.region,
                         other=args.other, rank=rank)
