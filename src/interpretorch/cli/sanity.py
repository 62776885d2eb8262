"""``interpretorch sanity``: the sanity checks of Adebayo et al. 2018 as a report (figure, curves, sanity.json)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from interpretorch.cli.common import (UserError, add_model_arguments, collect_images, load_model_from_args,
                                      load_weights, output_dir, parse_target, positive_int, user_error_message)

NAME = "sanity"
HELP = "model-parameter / data randomization sanity checks of saliency methods, as an HTML report"
DEFAULT_METHODS = "gradient,gradcam,guided_backprop"
CPU_MAX_STEPS = 4  # on a CPU the cascade stops after the top blocks unless --paper-settings (issue 32)


def _by_step(text: str) -> int | float | str:
    """--by-step: a step index (int), a fraction of the steps (float in (0, 1]) or a step name."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Images, model flags, methods, the test to run and its randomization, metrics and verdict settings."""
    p.add_argument("images", nargs="*", help="image files or folders (default: the bundled sample photos; "
                                             "--mode data uses the synthetic localisation set)")
    add_model_arguments(p)
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names (default: %(default)s)")
    p.add_argument("--mode", choices=("cascading", "independent", "data"), default="cascading",
                   help="cascading (top block first, one more each step), independent (one block at a time) or "
                        "data (SyntheticCNN trained on permuted labels against the true-label one)")
    p.add_argument("--blocks", default=None,
                   help="comma-separated module names randomized as blocks (default: the model's stages)")
    p.add_argument("--granularity", choices=("stages", "modules"), default="stages",
                   help="default blocks: the model's stages() (default) or every module holding parameters")
    p.add_argument("--init", choices=("reset", "normal"), default="reset",
                   help="each layer's own reset_parameters (default) or a truncated normal of --init-std")
    p.add_argument("--init-std", type=float, default=0.01, help="std of --init normal (default: %(default)s)")
    p.add_argument("--reset-running-stats", action="store_true",
                   help="also reset normalisation layers' running statistics (the paper kept them)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many steps (the top blocks only: a quicker check)")
    p.add_argument("--paper-settings", action="store_true",
                   help="on a CPU, randomize every block as the paper does (default there: the top "
                        f"{CPU_MAX_STEPS} steps unless --max-steps is given); a GPU always does")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")
    p.add_argument("--target", type=parse_target, default="top1",
                   help="'top1' (default: the original model's top class, kept at every step), a class index, "
                        "or one index per image")
    p.add_argument("--layer", default=None, help="layer for CAM methods (default: the model's last spatial layer)")
    p.add_argument("--metric", default="spearman_abs", help="similarity metric of the verdict (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="a method passes when its mean similarity falls below this (default: %(default)s)")
    p.add_argument("--by-step", type=_by_step, default=None,
                   help="... by this step: an index, a step name or a fraction of the steps (default 0.5; "
                        "the only step of --mode data)")
    p.add_argument("--data-images", type=int, default=16,
                   help="--mode data: synthetic test images explained (default: %(default)s)")
    p.add_argument("--true-weights", default=None,
                   help="--mode data: true-label SyntheticCNN weights (default: train them, about a minute)")
    p.add_argument("--random-weights", default=None,
                   help="--mode data: random-label weights from python -m interpretorch.sanity.data (default: train)")
    p.add_argument("--out", default="interpretorch-sanity", help="output folder (default: %(default)s)")


def _rule(args: argparse.Namespace, default_step):
    from interpretorch.sanity import VerdictRule

    return VerdictRule(args.metric, args.threshold, default_step if args.by_step is None else args.by_step)


def _data_test(args: argparse.Namespace, methods: list[str], out: Path) -> Path:
    from interpretorch.data.synthetic import make_localisation_set
    from interpretorch.models.synthetic_cnn import CAM_LAYER, PREPROCESS, load_synthetic_cnn, train_synthetic_cnn
    from interpretorch.sanity import data_randomization
    from interpretorch.sanity.data import (RandomLabelConfig, load_random_label_cnn, train_random_label_cnn)
    from interpretorch.sanity.report import save_report

    if args.model != "efficientnet_lite0" and args.model != "synthetic_cnn":
        raise UserError("--mode data is shipped for SyntheticCNN only; leave --model out")
    if args.data_images < 1:
        raise UserError(f"--data-images must be at least 1, got {args.data_images}")
    cfg = RandomLabelConfig()
    for flag, path in (("--true-weights", args.true_weights), ("--random-weights", args.random_weights)):
        if path:
            load_weights(path, flag)  # refuses a pickle or a non-torch file in one line before the loaders read it
    try:
        true_model = (load_synthetic_cnn(args.true_weights).model if args.true_weights
                      else train_synthetic_cnn()[0])
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise UserError(f"--true-weights {args.true_weights!r}: {user_error_message(e)}") from None
    if args.random_weights:
        try:
            random_model, info = load_random_label_cnn(args.random_weights)
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise UserError(f"--random-weights {args.random_weights!r}: {user_error_message(e)}") from None
    else:
        run = train_random_label_cnn(cfg, verbose=True)
        random_model, info = run.model, run.summary()
    test = make_localisation_set(args.data_images, seed=cfg.test_seed, start=cfg.n_test)
    x = PREPROCESS.normalize(test.images)
    result = data_randomization(true_model, random_model, x, methods, target=args.target,
                                layer=args.layer or CAM_LAYER,
                                batch_size=args.batch_size, rule=_rule(args, 0), seed=args.seed)
    extra = {k: v for k, v in info.items() if not isinstance(v, dict)}
    return save_report(result, out, images=test.images, image_names=[f"test {cfg.n_test + i}" for i in
                                                                      range(len(test))],
                       model_name="SyntheticCNN: true labels vs permuted labels", extra=extra)


def sanity_settings(args: argparse.Namespace, device) -> dict:
    """The cascade's length: the top ``CPU_MAX_STEPS`` steps on a CPU unless --paper-settings or --max-steps,
    else every step (or --max-steps); what the report records as its settings."""
    import torch

    cpu = torch.device(device).type == "cpu" and not getattr(args, "paper_settings", False)
    if args.max_steps is not None:
        return {"profile": "cpu" if cpu else "paper", "max_steps": args.max_steps, "note": "--max-steps given"}
    if cpu:
        return {"profile": "cpu", "max_steps": CPU_MAX_STEPS,
                "note": f"the top {CPU_MAX_STEPS} steps on a CPU; --paper-settings randomizes every block"}
    return {"profile": "paper", "max_steps": None, "note": "every block (the paper's cascade)"}


def _announce(model, x, methods, args: argparse.Namespace, blocks, max_steps, layer) -> None:
    """Print what the test will cost (``sanity.estimate_model_randomization``); never stops the run: a bad
    argument is left to the test to refuse in one line."""
    import sys

    from interpretorch.cli.estimate import say
    from interpretorch.sanity import estimate_model_randomization

    try:
        say(estimate_model_randomization(model, x, methods, mode=args.mode, blocks=blocks,
                                         granularity=args.granularity, layer=layer, batch_size=args.batch_size,
                                         max_steps=max_steps))
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    except Exception as e:  # an estimate must never stop a run
        print(f"interpretorch: no estimate ({type(e).__name__}: {e})", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Run the chosen test and write sanity.json, figure_<i>.png, curves.png and index.html into --out."""
    from interpretorch.attribution.registry import canonical
    from interpretorch.sanity import model_randomization
    from interpretorch.sanity.report import save_report

    methods = [canonical(m) for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods is empty; name at least one method")
    try:
        _rule(args, 0.5)  # --threshold checked before any work
    except ValueError as e:
        raise UserError(f"--{e}") from None
    if args.mode == "data" and args.images:
        raise UserError("--mode data runs on the synthetic localisation set; give no images")
    out = output_dir(args.out)
    failed: list[dict] = []
    if args.mode == "data":
        index = _data_test(args, methods, out)
    else:
        loaded = load_model_from_args(args)
        names, arrays, failed = collect_images(args.images)
        if not arrays:
            raise UserError("no readable images were given")
        x = loaded.preprocess(arrays).to(args.device)
        blocks = [b for b in args.blocks.split(",") if b.strip()] if args.blocks else None
        settings = sanity_settings(args, x.device)
        _announce(loaded.model, x, methods, args, blocks, settings["max_steps"], args.layer or loaded.cam_layer)
        result = model_randomization(loaded.model, x, methods, mode=args.mode, blocks=blocks,
                                     granularity=args.granularity, init=args.init, std=args.init_std,
                                     reset_running_stats=args.reset_running_stats, seed=args.seed,
                                     target=args.target, layer=args.layer or loaded.cam_layer,
                                     batch_size=args.batch_size, rule=_rule(args, 0.5), max_steps=settings["max_steps"],
                                     progress=True)
        index = save_report(result, out, images=loaded.preprocess.display(arrays),
                            image_names=[Path(n).name for n in names],
                            model_name=args.model,
                            extra={"settings": settings,
                                   **({"unreadable images": ", ".join(f["file"] for f in failed)} if failed else {})})
    data = json.loads((out / "sanity.json").read_text())
    for m, e in data["methods"].items():
        v = e["verdict"]
        print(f"{m}: {'passes' if v['passes'] else 'FAILS'} ({v['metric']} lowest {v['value']} by "
              f"{v['by_step']}, threshold {v['threshold']})")
    print(f"wrote {index}")
    return 1 if failed else 0  # as explain: the report covers the readable images, the exit code says some were not
