"""``interpretorch explain``: saliency maps for images, as an HTML report (``--evaluate`` adds the metrics)."""
from __future__ import annotations

import argparse
import ast
import sys
from typing import Any, Sequence

from interpretorch.cli.common import (UserError, add_model_arguments, collect_images, load_model_from_args,
                                      output_dir, parse_target, positive_int)
from interpretorch.cli.options import method_options
from interpretorch.models import MODELS

NAME = "explain"
HELP = "saliency maps for images, as an HTML report"


def parse_option(text: str) -> tuple[str, str, Any]:
    """``METHOD.NAME=VALUE`` -> (method, name, value); the value is a Python literal or else a string."""
    head, eq, raw = text.partition("=")
    method, dot, name = head.strip().rpartition(".")
    if not eq or not dot or not method or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"--option must look like METHOD.NAME=VALUE (e.g. rise.n_masks=4000), "
                                         f"got {text!r}")
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return method.strip(), name, value


def add_arguments(p: argparse.ArgumentParser, evaluate_flag: bool = True) -> None:
    """Images, the shared model flags, methods, target, layer, options and the output folder."""
    from interpretorch.attribution.registry import default_methods

    p.add_argument("images", nargs="*", help="image files or folders (default: the bundled sample photos)")
    add_model_arguments(p)
    p.add_argument("--methods", default=",".join(default_methods()),
                   help="comma-separated method names, or 'all' (default: %(default)s); "
                        "`interpretorch methods` lists them")
    p.add_argument("--target", type=parse_target, default="top1",
                   help="'top1' (default), a class index, or one index per image, comma-separated")
    p.add_argument("--layer", default=None, help="layer for CAM methods (default: the model's last spatial layer)")
    p.add_argument("--task", choices=("class", "detection", "segmentation", "similarity"), default=None,
                   help="what the model does (default: inferred from its output: a list of dicts with boxes -> "
                        "detection, 4-D logits or a dict with 'out' -> segmentation, 2-D outputs with --reference "
                        "-> similarity, else class); detection explains every detection above --score-threshold "
                        "(one row each, its box drawn), segmentation one map per class region, similarity the "
                        "similarity of each image to --reference")
    p.add_argument("--score-threshold", type=float, default=0.5, metavar="S",
                   help="with --task detection: explain the detections scoring at least S (default: %(default)s)")
    p.add_argument("--classes", default=None, metavar="A,B",
                   help="with --task segmentation: the classes (names or indices) whose regions are explained "
                        "(default: every predicted class but class 0, the background)")
    p.add_argument("--reference", default=None, metavar="IMG",
                   help="with --task similarity: the image whose embedding each image is compared to")
    p.add_argument("--out", default="interpretorch-report", help="output folder (default: %(default)s)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE", type=parse_option,
                   help="a keyword argument for one method, e.g. rise.n_masks=4000 or "
                        "integrated_gradients.baseline=blur (repeatable)")
    p.add_argument("--paper-settings", action="store_true",
                   help="on a CPU, run the papers' settings (the library defaults) instead of the lighter CPU "
                        "settings (fewer RISE masks, IG steps, SmoothGrad samples...); a GPU always uses them")
    p.add_argument("--topk", type=positive_int, default=1, metavar="K",
                   help="show the maps for each image's K most probable classes side by side (default: 1; "
                        "needs --target top1)")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="true labels, one 'IMAGE,LABEL' line per image (IMAGE: its file name or path; LABEL: a "
                        "class index or name): the report marks right and wrong predictions")
    p.add_argument("--folder-labels", action="store_true",
                   help="each image's label is the name of its folder (ImageFolder layout: ROOT/CLASS/IMAGE)")
    p.add_argument("--shared-scale", action="store_true",
                   help="one colour scale shared by every method and image (default: each map stretched to its "
                        "own min-max)")
    if evaluate_flag:
        p.add_argument("--evaluate", action="store_true", help="also compute the evaluation metrics")
    p.add_argument("--sanity", action="store_true",
                   help="also run the cascading model-randomization sanity check of each method (Adebayo et al. "
                        "2018): a pass / fail badge per method, linked to the figure in DIR/sanity/")
    p.add_argument("--sanity-steps", type=int, default=None, metavar="N",
                   help="with --sanity: randomize only the top N blocks (default: all)")
    from interpretorch.cli._dataset import add_dataset_arguments

    add_dataset_arguments(p)  # --data and its flags: whole datasets (cli/_dataset.py)


def class_index(text: str, class_names: Sequence[str]) -> int:
    """A label as a class index: an integer, or a class name (any of its comma-separated synonyms, any case)."""
    from interpretorch.labels import LabelError, class_index as parse

    try:
        return parse(text, class_names)
    except LabelError as e:
        raise UserError(str(e)) from None


def read_labels(path: str, names: Sequence[str], class_names: Sequence[str]) -> list[int | None]:
    """Each image's label from a file of 'IMAGE,LABEL' lines (``labels.image_labels``), or a UserError."""
    from interpretorch.labels import LabelError, image_labels

    try:
        return image_labels(path, names, class_names)
    except LabelError as e:
        raise UserError(str(e)) from None


def folder_labels(names: Sequence[str], class_names: Sequence[str]) -> list[int | None]:
    """Each image's label from the name of the folder holding it (``labels.parent_folder_labels``)."""
    from interpretorch.labels import LabelError, parent_folder_labels

    try:
        return list(parent_folder_labels(names, class_names))
    except LabelError as e:
        raise UserError(str(e)) from None


def _probe(model, x, spec: str) -> None:
    """One image through a user's model first, so a model that cannot take these inputs is a one-line error."""
    from interpretorch.capture import frozen

    try:
        with frozen(model):
            model(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = str(e).strip().split("\n")[0]
        raise UserError(f"--model {spec} cannot take the images as preprocessed, shape {tuple(x.shape)} "
                        f"(set --size, --mean and --std for its input): {type(e).__name__}: {first}") from None


def run(args: argparse.Namespace) -> int:
    """Explain the images with each method and write index.html, results.json and the pictures."""
    from tqdm import tqdm

    from interpretorch.attribution.registry import resolve_methods
    from interpretorch.report import write_report
    from interpretorch.report.html import render_html
    from interpretorch.run import plan_steps, run as run_methods
    from interpretorch.cli._dataset import run_if_dataset

    code = run_if_dataset(args)  # --data: the whole-dataset job
    if code is not None:
        return code
    wanted = args.methods if args.methods == "all" else [m for m in args.methods.split(",") if m.strip()]
    if not wanted:
        raise UserError("--methods names no method; `interpretorch methods` lists them")
    methods = resolve_methods(wanted)
    options = method_options(args.option, methods)
    out_dir = output_dir(args.out)
    loaded = load_model_from_args(args)
    if wanted == "all":
        methods = resolve_methods("all", loaded.model)
    names, arrays, failed = collect_images(args.images)
    if not arrays:
        import json

        print("interpretorch: no readable image was given", file=sys.stderr)
        results = {"model": args.model, "device": args.device, "target": str(args.target),
                   "method_names": methods, "images": [], "failed": failed, "timing": {}}
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        render_html(results, out_dir)
        return 2
    display = loaded.preprocess.display(arrays)
    x = loaded.preprocess.normalize(display).to(args.device)
    if args.model not in MODELS:
        _probe(loaded.model, x[:1], args.model)
    task = None
    if getattr(args, "task", None) != "class":
        x, display, names, task = _task_rows(args, loaded, x, display, names)
    evaluate = getattr(args, "evaluate", False)
    topk = getattr(args, "topk", 1)
    if task is not None and (topk > 1 or args.target != "top1"):
        raise UserError(f"--task {task['task']} explains its own targets (detections, class regions, similarity); "
                        "--target and --topk are for classifiers")
    if topk > 1 and args.target != "top1":
        raise UserError("--topk shows each image's K most probable classes; it cannot be combined with --target")
    labels = None
    if getattr(args, "labels", None) and getattr(args, "folder_labels", False):
        raise UserError("give --labels FILE or --folder-labels, not both")
    if getattr(args, "labels", None):
        labels = read_labels(args.labels, names, loaded.class_names)
    elif getattr(args, "folder_labels", False):
        labels = folder_labels(names, loaded.class_names)
    from interpretorch.attribution.cost import cpu_settings
    from interpretorch.attribution.registry import get_method
    from interpretorch.cli.estimate import row_bar

    options, settings = cpu_settings(methods, x.device, getattr(args, "paper_settings", False), options)
    layered = any(get_method(m).needs_layer for m in methods)
    if args.layer and not layered:  # refused before the estimate is printed, so the error stays one line
        raise UserError(f"--layer is for the layer methods; {', '.join(methods)} explain the input pixels")
    layer = args.layer or (loaded.cam_layer if layered else None)
    sanity = getattr(args, "sanity", False)
    total_rows = _announce(loaded.model, x, methods, options, layer, args.batch_size,
                           args.sanity_steps if sanity else False, task)
    dependent = [m for m in methods if not get_method(m).class_agnostic]
    steps = len(plan_steps(methods, options)) + (topk - 1) * len(plan_steps(dependent, options))
    bar = tqdm(total=steps, desc="explaining", unit="step", file=sys.stderr)
    ebar = None

    def progress(step: list[str]) -> None:
        bar.set_postfix_str(",".join(step)[:40])
        bar.update(1)

    def eval_progress(done: int, total: int, label: str) -> None:
        nonlocal ebar
        if ebar is None:
            bar.close()
            ebar = tqdm(total=total, desc="evaluating", unit="metric", file=sys.stderr)
        ebar.set_postfix_str(label[:40])
        ebar.update(done - ebar.n)

    try:
        with row_bar(total_rows if topk == 1 and not evaluate else None):
            result = run_methods(loaded.model, x, methods, args.target if task is None else task["targets"], layer,
                                 batch_size=args.batch_size, options=options,
                                 names=names, class_names=loaded.class_names or None,
                                 evaluate=evaluate, display=display, model_name=args.model, progress=progress,
                                 top_classes=topk, labels=labels, eval_progress=eval_progress,
                                 metrics=getattr(args, "metrics", None), keep_partial=True, failed=failed,
                                 settings=settings, device_label=args.device, sanity=sanity,
                                 sanity_steps=args.sanity_steps,
                                 task=None if task is None else task["summary"],
                                 row_images=None if task is None else task["images"])
    finally:
        bar.close()
        if ebar is not None:
            ebar.close()
    if result.interrupted:  # Ctrl-C: the finished methods' maps are written, without metrics
        page = write_report(result, out_dir, shared_scale=getattr(args, "shared_scale", False))
        print(f"\ninterpretorch: interrupted; the {len(result.methods)} finished method(s) are in {page}"
              + (" (no metrics)" if evaluate else ""), file=sys.stderr)
        return 130
    if result.sanity_check is not None:
        from interpretorch.sanity.report import save_report

        save_report(result.sanity_check, out_dir / "sanity", images=display)
    page = write_report(result, out_dir, shared_scale=getattr(args, "shared_scale", False))
    print(f"interpretorch: wrote {page}", file=sys.stderr)
    return 1 if failed else 0


def _task_rows(args: argparse.Namespace, loaded, x, display, names):
    """--task (given, or inferred from the model's output): the rows, pictures, names and targets it explains;
    (x, display, names, None) for a classifier."""
    from interpretorch.run import infer_task, task_rows

    reference = None
    if getattr(args, "reference", None):
        ref_names, ref_arrays, ref_failed = collect_images([args.reference])
        if not ref_arrays:
            raise UserError(f"--reference {args.reference}: {ref_failed[0]['error'] if ref_failed else 'no image'}")
        reference = loaded.preprocess.normalize(loaded.preprocess.display(ref_arrays[:1])).to(args.device)
    try:
        kind = args.task or infer_task(loaded.model, x, reference is not None)
    except TypeError:
        kind = "class"  # an output no task reads (a tuple, say): explained as a classifier, as before
    if kind == "class":
        return x, display, names, None
    classes = None
    if getattr(args, "classes", None):
        classes = [int(c) if c.strip().isdigit() else c.strip() for c in args.classes.split(",") if c.strip()]
    try:
        rows = task_rows(loaded.model, x, kind, display=display, names=names, class_names=loaded.class_names or (),
                         score_threshold=args.score_threshold, classes=classes, reference=reference,
                         batch_size=args.batch_size)
    except (ValueError, TypeError) as e:
        raise UserError(str(e)) from None
    shown = rows.display if rows.display is not None else display
    # the rows of one image are explained together (one forward pass for the methods that have one), except a
    # similarity's single row per image, which is batched across images
    return rows.inputs, shown, rows.names, {"task": kind, "targets": rows.targets,
                                             "summary": {**rows.summary, "rows": rows.rows},
                                             "images": rows.images if kind != "similarity" else None}


def _announce(model, x, methods, options, layer, batch_size, sanity_steps, task=None) -> int | None:
    """Print what the run (and, unless ``sanity_steps`` is False, its sanity check) will cost; the rows of both
    (None when unknown). An estimate never stops a run: a bad argument is left to the run to refuse in one line.
    A task run whose rows are explained image by image (``task["images"]``) is counted as ``explain_targets``
    runs it (``attribution.cost.estimate_targets``)."""
    from interpretorch.attribution.cost import estimate_run, estimate_targets
    from interpretorch.cli.estimate import say

    try:
        if task is not None and task.get("images") is not None:
            groups: dict[int, list] = {}
            for i, t in zip(task["images"], task["targets"]):
                groups.setdefault(i, []).append(t)
            rows = say(estimate_targets(model, x, list(groups.values()), methods, options, layer, batch_size))
        else:
            rows = say(estimate_run(model, x, methods, options, layer, batch_size))
        if sanity_steps is not False:
            from interpretorch.sanity import estimate_model_randomization

            more = say(estimate_model_randomization(model, x, methods, mode="cascading", layer=layer,
                                                    batch_size=batch_size, options=options, max_steps=sanity_steps))
            rows = None if rows is None or more is None else rows + more
        return rows
    except (ValueError, KeyError, TypeError, AttributeError):
        return None  # a bad argument: the run below refuses it in one line
    except Exception as e:  # an estimate must never stop a run
        print(f"interpretorch: no estimate ({type(e).__name__}: {e})", file=sys.stderr)
        return None
