"""`interpretorch dissect`: Network Dissection of layers over a Broden-format dataset (also under torchrun)."""
from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from pathlib import Path

import torch

from interpretorch.cli.common import (UserError, add_model_arguments, fraction, load_model_from_args, load_weights,
                                      output_dir, positive_int)
from interpretorch.datasets.distributed import init_from_env
from interpretorch.runstate import FolderBusy, lock_output

NAME = "dissect"
HELP = "label each unit of some layers with the concept it detects (Network Dissection on Broden-format data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the dissect flags."""
    p.add_argument("--data", required=True, help="Broden-format dataset folder (index.csv, label.csv, ...)")
    add_model_arguments(p)
    for action in p._actions:  # dissection feeds images at their stored size unless --size is given
        if action.dest == "size":
            action.help = "resize every image to SIZE x SIZE pixels (default: the size stored in the dataset)"
    p.add_argument("--weights", default=None, help="a state dict (torch.save) to load into --model")
    p.add_argument("--layers", required=True, help="comma-separated layer names, e.g. _blocks.15,_head_act")
    p.add_argument("--out", default="interpretorch-dissect", help="output folder (default: %(default)s)")
    p.add_argument("--quantile", type=fraction, default=0.005,
                   help="top quantile of each unit's activations that forms its region (default: %(default)s)")
    p.add_argument("--iou", type=fraction, default=0.04,
                   help="IoU at which a unit counts as a concept detector (default: %(default)s)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: %(default)s)")
    p.add_argument("--split", default=None, help="use only the index rows of this split")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--checkpoint-every", type=positive_int, default=20, help="batches between checkpoints")
    p.add_argument("--top-images", type=positive_int, default=8, help="top-activating images shown per unit")
    p.add_argument("--report-units", type=positive_int, default=64,
                   help="units shown in each layer's HTML report, best IoU first (default: %(default)s)")
    p.add_argument("--no-report", action="store_true", help="write tally.csv and summary.json only")
    p.add_argument("--relevance", action="store_true",
                   help="also choose each reported unit's images by its LRP relevance for the predicted class "
                        "(CRP), on a page linked from the layer page")


def run(args: argparse.Namespace) -> int:
    """Dissect, then (rank 0) write tally CSVs, summary.json and the HTML reports."""
    from interpretorch.dissect.broden import BrodenDataset, BrodenError
    from interpretorch.dissect.report import file_stem, write_layer_report
    from interpretorch.dissect.run import dissect, write_summary, write_tally

    rank, world, args.device = init_from_env(args.device)
    stack = ExitStack()
    try:
        layers = [n.strip() for n in args.layers.split(",") if n.strip()]
        if not layers:
            raise UserError("--layers is empty; give comma-separated layer names")
        if args.workers < 0:
            raise UserError(f"--workers must be >= 0, got {args.workers}")
        loaded = load_model_from_args(args)
        model = loaded.model
        if args.weights:
            state = load_weights(args.weights, "--weights")
            try:
                model.load_state_dict(state)
            except (RuntimeError, KeyError, TypeError, AttributeError) as e:
                raise UserError(f"--weights {args.weights!r} do not fit --model {args.model}: "
                                f"{str(e).splitlines()[0]}") from None
            model.eval()
        mean = args.mean or loaded.preprocess.mean
        std = args.std or loaded.preprocess.std
        try:
            dataset = BrodenDataset(args.data, split=args.split, size=args.size, mean=mean, std=std)
        except BrodenError as e:
            raise UserError(str(e)) from None
        out = output_dir(args.out)
        try:
            stack.callback(lock_output(out).release)
        except FolderBusy as e:
            raise UserError(str(e)) from None
        ckpt = out / "checkpoint.pt"
        if args.resume and not (ckpt.exists() or list(out.glob("checkpoint.pt.rank*"))):
            raise UserError(f"--resume: no checkpoint in {str(out)!r}")
        result = dissect(model, dataset, layers, quantile=args.quantile, iou_threshold=args.iou,
                         batch_size=args.batch_size, workers=args.workers, checkpoint=ckpt,
                         checkpoint_every=args.checkpoint_every, resume=args.resume, top_images=args.top_images)
        if rank == 0:
            for name, ld in result.layers.items():
                tally = write_tally(ld, out / f"{file_stem(name)}_tally.csv")
                if not args.no_report:
                    page = write_layer_report(result, name, model, dataset, out, max_units=args.report_units,
                                              batch_size=args.batch_size, model_name=args.model,
                                              tally_file=tally.name)
                    if args.relevance:
                        _relevance(args, result, name, model, dataset, out, page)
                s = ld.summary()
                print(f"{name}: {s['detectors']}/{s['units']} units covering {s['unique_concepts']} concepts "
                      f"with IoU >= {args.iou} "
                      f"({', '.join(f'{c} {n}' for c, n in s['detectors_per_category'].items())})")
            write_summary(result, out / "summary.json")
            print(f"wrote {out}", file=sys.stderr)
    finally:
        stack.close()
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


def _relevance(args: argparse.Namespace, result, name: str, model, dataset, out: Path, page: Path) -> None:
    """Reference images by relevance for the layer's reported units, linked from its page."""
    from interpretorch.dissect.relevance import link_from, write_relevance_page
    from interpretorch.dissect.report import file_stem

    label, score = result.layers[name].best()
    units = sorted(range(len(score)), key=lambda u: (-float(score[u]), u))[:args.report_units]
    rel_page, _ = write_relevance_page(model, dataset, name, out, units=units, n=args.top_images,
                                       batch_size=args.batch_size, resume=args.resume, stem=file_stem(name))
    link_from(page, rel_page)
