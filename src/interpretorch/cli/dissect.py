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
    p.add_argument("--data", default=None,
                   help="Broden-format dataset folder (index.csv, label.csv, ...); required except with --compare")
    add_model_arguments(p)
    for action in p._actions:  # dissection feeds images at their stored size unless --size is given
        if action.dest == "size":
            action.help = "resize every image to SIZE x SIZE pixels (default: the size stored in the dataset)"
    p.add_argument("--weights", default=None, help="a state dict (torch.save) to load into --model")
    p.add_argument("--layers", default=None,
                   help="comma-separated layer names, e.g. _blocks.15,_head_act; required except with --compare")
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
    add_experiment_arguments(p)


def add_experiment_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the flags of Network Dissection's experiments: rotation, training checkpoints, comparison."""
    g = p.add_argument_group("experiments (Bau et al. 2017)")
    g.add_argument("--rotate", type=alphas, default=None, metavar="ALPHA[,ALPHA...]",
                   help="dissect each layer's representation rotated by Q^ALPHA (Q a random rotation; 0: as it is, "
                        "1: fully rotated; the model's outputs are unchanged); writes rotation.html")
    g.add_argument("--seed", type=int, default=0, help="seed of the random rotations (default: %(default)s)")
    g.add_argument("--checkpoints", nargs="+", default=None, metavar="PATH",
                   help="weights files (state dicts) or folders of them, e.g. training snapshots: dissect each "
                        "with --model; writes checkpoints.html (detectors against training step)")
    g.add_argument("--compare", nargs="+", default=None, metavar="RUN",
                   help="output folders of earlier dissect runs (summary.json): write compare.html with the unique "
                        "detectors per category of every layer and run; no model or data needed")


def alphas(text: str) -> list[float]:
    """argparse type for --rotate: comma-separated numbers in [0, 1], returned sorted without repeats."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rotate takes comma-separated numbers in [0, 1], got {text!r}") from None
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if not vals or bad:
        raise argparse.ArgumentTypeError(f"--rotate: alpha must lie in [0, 1] (0: no rotation, 1: full rotation), "
                                         f"got {text!r}")
    return sorted(set(vals))


def run(args: argparse.Namespace) -> int:
    """Dissect, then (rank 0) write tally CSVs, summary.json and the HTML reports."""
    from interpretorch.dissect.broden import BrodenDataset, BrodenError
    from interpretorch.dissect.report import file_stem, write_layer_report
    from interpretorch.dissect.run import dissect, write_summary, write_tally

    chosen = [f for f, v in (("--rotate", args.rotate), ("--checkpoints", args.checkpoints),
                              ("--compare", args.compare)) if v is not None]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)} cannot be combined; run one experiment at a time")
    if chosen and args.relevance:
        raise UserError(f"--relevance cannot be combined with {chosen[0]}: it writes reference images for one "
                        "plain dissection")
    if args.compare is not None:
        return compare_runs(args)
    if args.data is None:
        raise UserError("--data is required: a Broden-format dataset folder (interpretorch make-probe writes one)")
    rank, world, args.device = init_from_env(args.device)
    stack = ExitStack()
    try:
        layers = [n.strip() for n in (args.layers or "").split(",") if n.strip()]
        if not layers:
            raise UserError("--layers is required: give comma-separated layer names")
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
        if args.rotate is not None:
            run_rotation(args, model, dataset, layers, out, rank)
            return 0
        if args.checkpoints is not None:
            run_checkpoints(args, model, dataset, layers, out, rank)
            return 0
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
    from interpretorch.dissect.relevance import link_from
    from interpretorch.dissect.report import file_stem, write_relevance_page

    label, score = result.layers[name].best()
    units = sorted(range(len(score)), key=lambda u: (-float(score[u]), u))[:args.report_units]
    rel_page, _ = write_relevance_page(model, dataset, name, out, units=units, n=args.top_images,
                                       batch_size=args.batch_size, resume=args.resume, stem=file_stem(name))
    link_from(page, rel_page)
def write_run(result, folder: Path) -> dict:
    """Write one dissection's tally CSVs and summary.json into ``folder``; returns its per-layer summaries."""
    from interpretorch.dissect.report import file_stem
    from interpretorch.dissect.run import write_summary, write_tally

    for name, ld in result.layers.items():
        write_tally(ld, folder / f"{file_stem(name)}_tally.csv")
    write_summary(result, folder / "summary.json")
    return {n: ld.summary() for n, ld in result.layers.items()}


def run_rotation(args: argparse.Namespace, model, dataset, layers: list[str], out: Path, rank: int) -> None:
    """--rotate: one dissection per alpha (folders alpha_A/), then rotation.json / .png / .html."""
    import json

    from interpretorch.dissect.report import file_stem, write_layer_report, write_series_report
    from interpretorch.dissect.rotation import dissect_rotated, rotated_copy, rotated_site

    record = out / "rotation_settings.json"
    settings = {"alphas": args.rotate, "seed": args.seed, "layers": layers}
    if args.resume:
        if not record.exists():
            raise UserError(f"--resume: no rotation run in {str(out)!r} (no rotation_settings.json)")
        old = json.loads(record.read_text())
        for key, flag in (("seed", "--seed"), ("alphas", "--rotate"), ("layers", "--layers")):
            if old.get(key) != settings[key]:
                def show(v):
                    return ",".join(f"{a:g}" for a in v) if key == "alphas" else ",".join(v) if key == "layers" \
                        else str(v)
                raise UserError(f"--resume: the run in {str(out)!r} used {flag} {show(old.get(key))}, not "
                                f"{show(settings[key])}; resume with the same {flag} or choose another --out")
    elif rank == 0:
        record.write_text(json.dumps(settings))
    points = []
    for a in args.rotate:
        folder = out / f"alpha_{a:g}"
        folder.mkdir(exist_ok=True)
        result = dissect_rotated(model, dataset, layers, a, args.seed, quantile=args.quantile,
                                 iou_threshold=args.iou, batch_size=args.batch_size, workers=args.workers,
                                 checkpoint=folder / "checkpoint.pt", checkpoint_every=args.checkpoint_every,
                                 resume=args.resume, top_images=args.top_images)
        if rank == 0:
            summaries = write_run(result, folder)
            if not args.no_report:
                rotated = rotated_copy(model, dataset, layers, a, args.seed)
                for name in layers:
                    write_layer_report(result, name, rotated, dataset, folder, max_units=args.report_units,
                                       batch_size=args.batch_size, site=rotated_site(name),
                                       model_name=f"{args.model} rotated by Q^{a:g} (seed {args.seed})",
                                       tally_file=f"{file_stem(name)}_tally.csv")
            points.append({"x": a, "name": f"alpha {a:g}", "folder": folder.name, "images": result.images,
                           "layers": summaries})
            print(f"alpha {a:g}: " + ", ".join(f"{n} {s['detectors']}/{s['units']} detectors, "
                                              f"{s['unique_concepts']} concepts" for n, s in summaries.items()))
    if rank == 0:
        meta = (f"model {args.model}, dataset {args.data} ({points[0]['images']} images), random rotation Q per "
                f"layer from seed {args.seed}, Q^alpha applied to the layer's output and undone above it (the "
                f"model's outputs are unchanged), top quantile {args.quantile} per unit. These are the counts of one "
                f"draw of Q; other --seed values show the spread between draws.")
        page = write_series_report(points, out, "rotation", x_label="alpha", title="rotated representations",
                                   meta=meta, seed=args.seed)
        print(f"wrote {page}", file=sys.stderr)


def checkpoint_files(paths: list[str]) -> list[Path]:
    """The weights files named by --checkpoints (a folder stands for its .pt / .pth files), in training order."""
    import re

    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.suffix in (".pt", ".pth") and f.is_file())
            if not found:
                raise UserError(f"--checkpoints {p!r}: the folder holds no .pt or .pth files")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"--checkpoints {p!r}: no such file or folder")

    def step(f: Path) -> int | None:
        m = re.findall(r"\d+", f.stem)
        return int(m[-1]) if m else None

    if all(step(f) is not None for f in files):
        files = sorted(files, key=lambda f: (step(f), f.name))
    if len({f.resolve() for f in files}) != len(files):
        raise UserError("--checkpoints names a file twice")
    return files


def run_checkpoints(args: argparse.Namespace, model, dataset, layers: list[str], out: Path, rank: int) -> None:
    """--checkpoints: one dissection per weights file (folders named after them), then checkpoints.json/.png/.html."""
    import copy
    import re

    from interpretorch.dissect.report import file_stem, write_series_report
    from interpretorch.dissect.run import dissect

    files = checkpoint_files(args.checkpoints)
    numbers = [re.findall(r"\d+", f.stem) for f in files]
    by_step = all(numbers)
    points = []
    for i, f in enumerate(files):
        state = load_weights(str(f), "--checkpoints")
        net = copy.deepcopy(model)
        try:
            net.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except (RuntimeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"--checkpoints {str(f)!r} does not fit --model {args.model}: "
                            f"{str(e).splitlines()[0]}") from None
        net.eval()
        folder = out / file_stem(f.stem)
        folder.mkdir(exist_ok=True)
        result = dissect(net, dataset, layers, quantile=args.quantile, iou_threshold=args.iou,
                         batch_size=args.batch_size, workers=args.workers, checkpoint=folder / "checkpoint.pt",
                         checkpoint_every=args.checkpoint_every, resume=args.resume, top_images=args.top_images)
        if rank == 0:
            summaries = write_run(result, folder)
            x = int(numbers[i][-1]) if by_step else i
            points.append({"x": x, "name": f.name, "folder": folder.name, "images": result.images,
                           "layers": summaries})
            print(f"{f.name}: " + ", ".join(f"{n} {s['detectors']}/{s['units']} detectors, "
                                           f"{s['unique_concepts']} concepts" for n, s in summaries.items()))
    if rank == 0:
        if len({p["folder"] for p in points}) != len(points):
            raise UserError("--checkpoints: two files have the same name; their results would share a folder")
        meta = (f"model {args.model} with each of {len(files)} weights files, dataset {args.data} "
                f"({points[0]['images']} images), top quantile {args.quantile} per unit. The x axis is "
                + ("the last number in each file name (the training step of a snapshot)." if by_step
                   else "the files' order."))
        page = write_series_report(points, out, "checkpoints", x_label="step" if by_step else "file",
                                   title="detectors over training", meta=meta)
        print(f"wrote {page}", file=sys.stderr)


def compare_runs(args: argparse.Namespace) -> int:
    """--compare: read each run's summary.json and write compare.json / .png / .html into --out."""
    import json

    from interpretorch.dissect.report import write_compare_report

    runs = []
    for r in args.compare:
        path = Path(r)
        summary = path / "summary.json" if path.is_dir() else path
        if not summary.is_file():
            raise UserError(f"--compare {r!r}: no summary.json there (give the --out folder of a dissect run)")
        try:
            data = json.loads(summary.read_text())
            data["layers"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"--compare {r!r}: {str(summary)!r} is not a dissect summary.json") from None
        name = (path if path.is_dir() else path.parent).resolve().name
        runs.append((name, data))
    names = [n for n, _ in runs]
    for i, n in enumerate(names):
        if names.count(n) > 1:
            runs[i] = (f"{n} ({i + 1})", runs[i][1])
    out = output_dir(args.out)
    page = write_compare_report(runs, out)
    print(f"wrote {page}", file=sys.stderr)
    return 0
