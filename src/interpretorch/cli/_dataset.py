"""The ``--data`` part of ``explain`` and ``evaluate`` (not a command: a leading underscore keeps it out of the
command list): whole datasets streamed in batches, results sharded on disk, resumable, under ``torchrun`` too."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from interpretorch.cli.common import UserError, output_dir, positive_int


def parse_metrics(text: str) -> Any:
    """argparse type for --metrics: 'all' or comma-separated metric names."""
    if text.strip() == "all":
        return "all"
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--metrics names no metric")
    return names


def _has(p: argparse.ArgumentParser, flag: str) -> bool:
    return flag in p._option_string_actions  # noqa: SLF001 - a flag another part of the CLI may declare too


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """Add --data and its flags (labels, boxes / masks, limit, seed, resume, save-maps, ...); --target gains 'label'."""
    g = p.add_argument_group("whole datasets (--data)")
    g.add_argument("--data", metavar="PATH", default=None,
                   help="explain a whole dataset instead of single images: a folder of images, an ImageFolder tree "
                        "(class subfolders), a CSV / text list of files (optional second column: label), or an "
                        "annotation file of the images' objects (FOLDER/annotations.json or FILE.json; see "
                        "interpretorch.datasets.annotations), which --task detection / segmentation scores the maps "
                        "against; read in batches, results written as they come; works under torchrun")
    if not _has(p, "--labels"):
        g.add_argument("--labels", metavar="FILE", default=None,
                       help="with --data: a CSV of 'file,label' rows giving each image's class index")
    g.add_argument("--boxes", metavar="DIR", default=None,
                   help="with --data: Pascal VOC XML files with the objects' boxes, one per image (same name)")
    g.add_argument("--masks", metavar="DIR", default=None,
                   help="with --data: object mask PNGs (non-zero = object), one per image (same name)")
    if not _has(p, "--metrics"):
        g.add_argument("--metrics", type=parse_metrics, default=None,
                       help="comma-separated metrics or families (faithfulness, robustness, localisation, "
                            "complexity, randomisation, axiomatic; default: all but max_sensitivity; the pointing "
                            "games only with --boxes / --masks), or 'all'")
    g.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="with --data: a random subset of N images (reproducible with --seed)")
    if not _has(p, "--seed"):
        g.add_argument("--seed", type=int, default=0, help="seed of --limit's subset, the bootstrap and the "
                                                           "gallery's random sample (default: %(default)s)")
    g.add_argument("--resume", action="store_true",
                   help="with --data: continue the run in --out, skipping the images already done")
    g.add_argument("--save-maps", action="store_true",
                   help="with --data: also save every map (float16, sharded .npz); explain --data always does")
    g.add_argument("--workers", type=int, default=0, help="with --data: DataLoader worker processes (default: 0)")
    g.add_argument("--shard-size", type=positive_int, default=256, metavar="N",
                   help="with --data: images per results shard file (default: %(default)s)")
    g.add_argument("--gallery-metric", default=None, metavar="METRIC",
                   help="with --data: rank the gallery's best and worst images by this metric "
                        "(default: deletion, insertion or average_drop)")
    target = p._option_string_actions.get("--target")  # noqa: SLF001
    if target is not None and target.type is not None:
        plain = target.type

        def with_label(text: str) -> Any:
            return "label" if text == "label" else plain(text)

        target.type = with_label
        target.help = (target.help or "") + "; with --data also 'label' (each image's own class)"


def run_if_dataset(args: argparse.Namespace) -> int | None:
    """Run the dataset job when ``--data`` is given (returns the exit code), else None."""
    if getattr(args, "data", None) is None:
        if getattr(args, "target", None) == "label":
            raise UserError("--target label needs --data (the labels come with the dataset)")
        for flag in ("boxes", "masks", "limit", "resume", "save_maps", "workers", "gallery_metric"):
            if getattr(args, flag, None):
                raise UserError(f"--{flag.replace('_', '-')} needs --data")
        return None
    return run_dataset(args)


def _task_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """--task, --score-threshold and --classes as a DatasetJob's task, score_threshold and classes."""
    task = getattr(args, "task", None)
    if task in (None, "class"):
        return {}
    if getattr(args, "reference", None):
        raise UserError("--reference is for --task similarity on images given on the command line")
    classes = None
    if getattr(args, "classes", None):
        classes = [int(c) if c.strip().isdigit() else c.strip() for c in args.classes.split(",") if c.strip()]
    return {"task": task, "score_threshold": args.score_threshold, "classes": classes}


def run_dataset(args: argparse.Namespace) -> int:
    """Explain (``evaluate``: and score) the dataset of ``--data``; rank 0 prints the summary and the report's path."""
    from interpretorch.attribution.registry import resolve_methods
    from interpretorch.cli.common import load_model_from_args
    from interpretorch.cli.estimate import say
    from interpretorch.cli.options import method_options, metric_options as checked_metric_options
    from interpretorch.datasets.runner import DatasetJob, run_dataset_job
    from interpretorch.datasets.streams import DatasetError
    from interpretorch.datasets.summary import summary_lines
    from interpretorch.attribution.cost import cpu_settings
    from interpretorch.metrics.evaluate import CPU_METRIC_SETTINGS, OPTION_GROUPS
    from interpretorch.runstate import Terminated

    if args.images:
        raise UserError("give image files or --data, not both")
    if getattr(args, "sanity", False):
        raise UserError("--sanity runs on single images; leave it out with --data")
    evaluate = bool(getattr(args, "evaluate", False))
    wanted = args.methods if args.methods == "all" else [m for m in args.methods.split(",") if m.strip()]
    if not wanted:
        raise UserError("--methods names no method; `interpretorch methods` lists them")
    metric_options = checked_metric_options(args.option)  # --option deletion.step=0.05: a metric's keyword argument
    options = method_options([o for o in args.option if o[0] not in OPTION_GROUPS], resolve_methods(wanted))
    paper = getattr(args, "paper_settings", False)
    options, settings = cpu_settings(resolve_methods(wanted), args.device, paper, options)
    if evaluate:  # the metrics' lighter CPU settings, recorded with the methods'
        metric_options, record = cpu_settings(list(CPU_METRIC_SETTINGS), args.device, paper, metric_options,
                                              CPU_METRIC_SETTINGS)
        settings = {**settings, "changed": {**settings["changed"], **record["changed"]}}
    out = output_dir(args.out)
    try:
        job = DatasetJob(
            data=args.data, out=out, load_model=lambda device: load_model_from_args(args, device=device),
            methods=wanted, device=args.device, model_name=args.model, evaluate=evaluate,
            metrics=getattr(args, "metrics", None), options=options, metric_options=metric_options,
            target=args.target, layer=args.layer, batch_size=args.batch_size, labels=args.labels, boxes=args.boxes,
            masks=args.masks, limit=args.limit, seed=args.seed, resume=args.resume, save_maps=args.save_maps,
            workers=args.workers, shard_size=args.shard_size, gallery_metric=args.gallery_metric, settings=settings,
            **_task_arguments(args))
        result = run_dataset_job(job, on_estimate=say)
    except DatasetError as e:
        raise UserError(str(e)) from None
    except Terminated:
        print(f"interpretorch: stopped by SIGTERM; the finished images are kept in {out} "
              "(add --resume to continue)", file=sys.stderr)
        return 143
    if result.rank != 0:
        return 0
    if result.run.summary:
        print("\n".join(summary_lines(result.run.summary)))
    n_failed = len(result.run.failed)
    print(f"interpretorch: {result.run.manifest.get('images_done')} image(s) in {out}"
          + (f", {n_failed} could not be read" if n_failed else "") + f"; wrote {result.page}", file=sys.stderr)
    return 1 if n_failed else 0
