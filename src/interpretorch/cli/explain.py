"""``interpretorch explain``: saliency maps for images, as an HTML report (``--evaluate`` adds the metrics)."""
from __future__ import annotations

import argparse
import ast
import sys
from typing import Any, Sequence

from interpretorch.cli.common import (UserError, add_model_arguments, collect_images, load_model_from_args,
                                      output_dir, parse_target)
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


def method_options(pairs: Sequence[tuple[str, str, Any]], methods: Sequence[str]) -> dict[str, dict]:
    """Group ``--option`` values by method, checking each method runs and takes the option."""
    from interpretorch.attribution.registry import canonical, get_method

    options: dict[str, dict] = {}
    for method, name, value in pairs:
        m = canonical(method)
        if m not in methods:
            raise UserError(f"--option {method}.{name}: {m} is not among the methods run ({', '.join(methods)})")
        try:
            get_method(m).check_options({name: value})
        except TypeError as e:
            raise UserError(f"--option {method}.{name}: {e}") from None
        options.setdefault(m, {})[name] = value
    return options


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
    p.add_argument("--out", default="interpretorch-report", help="output folder (default: %(default)s)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE", type=parse_option,
                   help="a keyword argument for one method, e.g. rise.n_masks=4000 or "
                        "integrated_gradients.baseline=blur (repeatable)")
    if evaluate_flag:
        p.add_argument("--evaluate", action="store_true", help="also compute the evaluation metrics")
    p.add_argument("--sanity", action="store_true",
                   help="also run the cascading model-randomization sanity check of each method (Adebayo et al. "
                        "2018): a pass / fail badge per method, linked to the figure in DIR/sanity/")
    p.add_argument("--sanity-steps", type=int, default=None, metavar="N",
                   help="with --sanity: randomize only the top N blocks (default: all)")
    from interpretorch.cli._dataset import add_dataset_arguments

    add_dataset_arguments(p)  # --data and its flags: whole datasets (cli/_dataset.py)


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
    evaluate = getattr(args, "evaluate", False)
    bar = tqdm(total=len(plan_steps(methods, options)), desc="explaining", unit="step", file=sys.stderr)

    def progress(step: list[str]) -> None:
        bar.set_postfix_str(",".join(step)[:40])
        bar.update(1)

    try:
        result = run_methods(loaded.model, x, methods, args.target, args.layer or loaded.cam_layer,
                             batch_size=args.batch_size, options=options,
                             names=names, class_names=loaded.class_names or None,
                             evaluate=evaluate, display=display, model_name=args.model, progress=progress,
                             metrics=getattr(args, "metrics", None))
    finally:
        bar.close()
    result.failed = failed
    result.device = args.device
    if getattr(args, "sanity", False):
        result.sanity = _sanity(loaded, x, display, result, args, out_dir)
    page = write_report(result, out_dir)
    print(f"interpretorch: wrote {page}", file=sys.stderr)
    return 1 if failed else 0


def _sanity(loaded, x, display, result, args: argparse.Namespace, out_dir) -> dict[str, dict]:
    """The cascading randomization test of the run's methods (same targets, options and layer), written to
    ``out_dir/sanity/``; returns each method's verdict as JSON-ready values with the report's path."""
    from interpretorch.sanity import model_randomization
    from interpretorch.sanity.report import save_report

    idx = next((r.explanation.target for r in result.methods.values() if r.explanation.target is not None), None)
    sanity = model_randomization(loaded.model, x, list(result.methods), mode="cascading",
                                 target=idx if idx is not None else args.target, layer=result.layer,
                                 batch_size=args.batch_size, options={m: r.options for m, r in result.methods.items()
                                                                      if r.options},
                                 max_steps=args.sanity_steps)
    save_report(sanity, out_dir / "sanity", images=display)
    return {m: {**v.to_dict(), "report": "sanity/index.html"} for m, v in sanity.verdicts.items()}
