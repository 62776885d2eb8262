"""``interpretorch evaluate``: explain, then score the maps with the evaluation metrics."""
from __future__ import annotations

import argparse

from interpretorch.cli import explain

NAME = "evaluate"
HELP = "saliency maps plus faithfulness metrics, as an HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``explain``, writing to a folder of its own by default."""
    explain.add_arguments(p, evaluate_flag=False)
    p.set_defaults(out="interpretorch-evaluate", evaluate=True)


def run(args: argparse.Namespace) -> int:
    """Explain and evaluate."""
    return explain.run(args)
