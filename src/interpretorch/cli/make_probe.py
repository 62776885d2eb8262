"""`interpretorch make-probe`: write the seeded synthetic probe dataset in Broden format."""
from __future__ import annotations

import argparse
from pathlib import Path

from interpretorch.cli.common import UserError, output_dir, positive_int

NAME = "make-probe"
HELP = "write a seeded synthetic Broden-format probe set (colours, textures, objects, parts, scenes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the make-probe flags."""
    p.add_argument("dir", help="folder to create (must be empty or absent)")
    p.add_argument("--images", type=positive_int, default=200, help="number of images (default: %(default)s)")
    p.add_argument("--size", type=positive_int, default=112, help="image side in pixels (default: %(default)s)")
    p.add_argument("--mask-size", type=positive_int, default=None,
                   help="label mask side in pixels (default: half the image size, as Broden)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Write the probe set."""
    from interpretorch.dissect.probe import make_probe

    root = Path(args.dir)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{args.dir!r} exists and is not an empty folder; choose a new one")
    if args.size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {args.size}")
    if args.mask_size is not None and args.mask_size > args.size:
        raise UserError(f"--mask-size {args.mask_size} is larger than --size {args.size}")
    output_dir(root, "dir")  # created now, so a folder that cannot be written is one line before any work
    make_probe(root, args.images, args.size, args.seed, args.mask_size)
    print(f"wrote {args.images} images to {root}")
    return 0
