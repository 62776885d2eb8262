"""`interpretorch <command>`: parse arguments, call the library, write files."""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

DEFAULT_METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "ablationcam")


def _parse_target(text: str) -> Any:
    if text == "top1":
        return "top1"
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--target must be 'top1', a class index or comma-separated indices, "
                                         f"got {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


# Arguments the command line sets itself (or a method's signature plumbing), never through --option.
_NOT_OPTIONS = ("model", "inputs", "target", "layer", "batch_size", "methods", "kwargs", "options")


def _parse_option(text: str) -> tuple[str, str, Any]:
    """``method.name=value`` -> (method, name, value); the value is a Python literal or else a string."""
    import ast

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


def _method_options(pairs: Sequence[tuple[str, str, Any]], methods: Sequence[str]) -> dict[str, dict]:
    """Group ``--option`` values by canonical method name, checking each method runs and takes the option."""
    import inspect

    from interpretorch.attribution.registry import _accepts, _function, canonical

    options: dict[str, dict] = {}
    for method, name, value in pairs:
        m = canonical(method)
        if m not in methods:
            raise ValueError(f"--option {method}.{name}: {m} is not among the methods run ({', '.join(methods)})")
        if name in _NOT_OPTIONS or not _accepts(_function(m), name):
            takes = [p for p in inspect.signature(_function(m)).parameters if p not in _NOT_OPTIONS]
            raise ValueError(f"--option {method}.{name}: {m} takes no option {name!r}; it takes {', '.join(takes)}"
                             " (target, layer and batch size have their own flags)")
        options.setdefault(m, {})[name] = value
    return options


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="interpretorch", description="Explain what a vision model sees.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_text in (("explain", "saliency maps for images, as an HTML report"),
                            ("evaluate", "saliency maps plus faithfulness metrics, as an HTML report")):
        e = sub.add_parser(name, help=help_text)
        e.add_argument("images", nargs="*", help="image files or folders (default: the bundled sample photos)")
        e.add_argument("--model", default="efficientnet_lite0",
                       help="efficientnet_lite0 (default), tiny_cnn, package.module:factory, or a TorchScript file")
        e.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                       help="comma-separated method names, or 'all' (default: %(default)s)")
        e.add_argument("--target", type=_parse_target, default="top1",
                       help="'top1' (default), a class index, or one index per image, comma-separated")
        e.add_argument("--layer", default=None, help="layer for CAM methods (default: the model's last spatial layer)")
        e.add_argument("--out", default="interpretorch-report", help="output folder (default: %(default)s)")
        e.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
        e.add_argument("--batch-size", type=int, default=None, help="images / perturbations per model call")
        e.add_argument("--size", type=int, default=None, help="input size for a user model (default 224)")
        e.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE", type=_parse_option,
                       help="a keyword argument for one method, e.g. rise.n_masks=4000 or "
                            "integrated_gradients.baseline=blur (repeatable)")
        if name == "explain":
            e.add_argument("--evaluate", action="store_true", help="also compute the evaluation metrics")
    lay = sub.add_parser("layers", help="list a model's layers and their output shapes")
    lay.add_argument("--model", default="efficientnet_lite0")
    lay.add_argument("--size", type=int, default=None)
    return p


def _safe_stem(i: int, name: str) -> str:
    return f"{i:03d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]


def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path)


def _collect_images(paths: Sequence[str], preprocess) -> tuple[list[str], list[np.ndarray], list[dict]]:
    """Load every image (the samples when none are given); unreadable ones are reported, not fatal."""
    from interpretorch.data.samples import sample_images
    from interpretorch.models.preprocess import ImageLoadError, find_images, load_image

    if not paths:
        named = sample_images()
        return [n for n, _ in named], [a for _, a in named], []
    names, arrays, failed = [], [], []
    for f in find_images(paths):
        try:
            arrays.append(load_image(f))
            names.append(str(f))
        except ImageLoadError as e:
            print(f"interpretorch: skipping {f}: {e}", file=sys.stderr)
            failed.append({"file": str(f), "error": str(e)})
    return names, arrays, failed


def _predictions(model, x: torch.Tensor, class_names: list[str], batch_size: int | None, k: int = 5):
    from interpretorch.attribution.common import clean_pass

    _, out = clean_pass(model, x, "top1", batch_size)
    if out.dim() != 2:
        return [[] for _ in range(len(x))]
    probs = out.float().softmax(1)
    top = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[{"index": int(i), "name": class_names[int(i)] if int(i) < len(class_names) else f"class {int(i)}",
              "prob": float(p)} for p, i in zip(pv, iv)] for pv, iv in zip(top.values, top.indices)]


def run_explain(args: argparse.Namespace, evaluate: bool = False) -> int:
    """Explain the images with each method and write index.html, results.json and the PNGs."""
    from tqdm import tqdm

    from interpretorch.attribution.cam import CAM_METHODS
    from interpretorch.attribution.registry import LAYER_METHODS, available_methods, canonical, explain
    from interpretorch.attribution.common import resolve_layer
    from interpretorch.models import load_model
    from interpretorch.models.preprocess import Preprocess
    from interpretorch.report import write_report

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("interpretorch: --device cuda asked for, but no CUDA device is available", file=sys.stderr)
        return 2
    methods = available_methods() if args.methods == "all" else [canonical(m) for m in args.methods.split(",") if m]
    options = _method_options(args.option, methods)
    loaded = load_model(args.model, device=args.device)
    if args.size:
        loaded.preprocess = Preprocess(args.size, loaded.preprocess.mean, loaded.preprocess.std)
    model = loaded.model
    names, arrays, failed = _collect_images(args.images, loaded.preprocess)
    out_dir = Path(args.out)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "maps").mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"model": args.model, "device": args.device, "target": str(args.target),
                               "method_names": methods, "images": [], "failed": failed, "timing": {}}
    if not arrays:
        print("interpretorch: no readable image was given", file=sys.stderr)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        write_report(results, out_dir)
        return 2
    display = loaded.preprocess.display(arrays)
    x = loaded.preprocess.normalize(display).to(args.device)
    class_names = loaded.class_names or (_imagenet_if(model, x))
    preds = _predictions(model, x, class_names, args.batch_size)
    layer = args.layer or loaded.cam_layer
    if any(m in LAYER_METHODS for m in methods):
        layer = resolve_layer(model, layer, x)
        results["layer"] = layer
    stems = [_safe_stem(i, Path(n).stem) for i, n in enumerate(names)]
    for i, (n, stem) in enumerate(zip(names, stems)):
        _save_png((display[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                  out_dir / "images" / f"{stem}.png")
        results["images"].append({"name": Path(n).name if args.images else n, "file": n,
                                  "image": f"images/{stem}.png", "predictions": preds[i], "methods": {}})
    explanations = {}
    # The gradient CAMs share one forward/backward pass: run them as one step and report that shared time.
    shared = [m for m in methods if m in CAM_METHODS and m not in options]
    steps: list[list[str]] = ([shared] if shared else []) + [[m] for m in methods if m not in shared]
    bar = tqdm(total=len(methods), desc="explaining", unit="method", file=sys.stderr)
    for step in steps:
        bar.set_postfix_str(",".join(step)[:40])
        t0 = time.perf_counter()
        got = explain(model, x, step, args.target, layer if step[0] in LAYER_METHODS else None,
                      batch_size=args.batch_size, options={m: options[m] for m in step if m in options})
        seconds = time.perf_counter() - t0
        bar.update(len(step))
        for m in step:
            explanations[m] = got[m]
            results["timing"][m] = {"seconds": seconds, "per_image": seconds / len(x),
                                    "shared_with": [o for o in step if o != m]}
    bar.close()
    for m, e in explanations.items():
        seconds = results["timing"][m]["seconds"]
        # Pixel attributions (B, C, H, W) are shown as the sanity-check paper does: |map| summed over channels in
        # grayscale and the signed sum in a diverging colormap, both clipped at the 99th percentile. Heat maps
        # over the image suit the smooth region maps (CAMs, occlusion, RISE), not pixel-level gradients.
        pixel = e.maps.dim() == 4
        pictures = e.visualize("abs_grayscale") if pixel else e.overlay(display)
        signed = e.visualize("diverging") if pixel else None
        maps2d = e.map2d().float().cpu().numpy()
        for i, stem in enumerate(stems):
            f = f"{stem}_{_file_safe(m)}"
            _save_png(pictures[i], out_dir / "images" / f"{f}.png")
            if signed is not None:
                _save_png(signed[i], out_dir / "images" / f"{f}_signed.png")
            np.save(out_dir / "maps" / f"{f}.npy", maps2d[i])
            tgt = None if e.target is None else int(e.target[i])
            results["images"][i]["methods"][m] = {
                "overlay": f"images/{f}.png", "map": f"maps/{f}.npy",
                "signed": None if signed is None else f"images/{f}_signed.png",
                "view": "abs_grayscale p99 (signed: diverging p99)" if pixel else "overlay",
                "options": options.get(m, {}),
                "target": tgt, "target_name": None if tgt is None or tgt >= len(class_names) else class_names[tgt],
                "layer": e.layer, "seconds": seconds / len(x)}
    if evaluate:
        from interpretorch.report.evaluation import add_evaluation

        add_evaluation(results, model, x, explanations, args)
    (out_dir / "results.json").write_text(
        json.dumps({k: v for k, v in results.items() if k != "evaluation_html"}, indent=2))
    page = write_report(results, out_dir)
    print(f"interpretorch: wrote {page}", file=sys.stderr)
    return 1 if failed else 0


def _file_safe(method: str) -> str:
    return method.replace("+", "pp")


def _imagenet_if(model, x) -> list[str]:
    from interpretorch.attribution.common import clean_pass
    from interpretorch.models import imagenet_classes

    _, out = clean_pass(model, x[:1], "top1", None)
    return imagenet_classes() if out.dim() == 2 and out.shape[1] == 1000 else []


def run_layers(args: argparse.Namespace) -> int:
    """Print each module giving a (B, C, H, W) output, with its shape, in call order."""
    from interpretorch.models import load_model
    from interpretorch.models.layers import spatial_layers

    loaded = load_model(args.model)
    size = args.size or loaded.preprocess.size
    for name, shape in spatial_layers(loaded.model, torch.zeros(1, 3, size, size)):
        print(f"{name:40s} {tuple(shape[1:])}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interpretorch`` command."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "layers":
            return run_layers(args)
        return run_explain(args, evaluate=args.command == "evaluate" or getattr(args, "evaluate", False))
    except (ValueError, KeyError, FileNotFoundError, TypeError, ImportError, AttributeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"interpretorch: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
