"""Alignment of generation attributions on the shipped sequence models with known alignments.

For each of ``--n`` seeded test sentences (seed 3, never seen in training) and each output word (``<eos>``
excluded), is the top-attributed input word (a source word for ``translation``, a prompt token for ``copy``)
the aligned one? Every method of ``explain-generation`` is run on the same sentences, explaining each output
word's log-probability and its logit (``--targets``); earlier output words stay fixed (only source / prompt
tokens are perturbed), IG with ``--steps`` Gauss-Legendre steps from the ``<pad>`` embedding (zero). The
baseline of IG and ablation is run both ways (``--special-tokens``): ``keep`` (the template tokens ``<bos>``,
``<sep>``, ``<eos>`` keep their own embedding / are not ablated, so their columns are exactly 0) and ``replace``
(every attributed token becomes ``<pad>``); the other methods have no baseline and run once.
Prints a Markdown table (hit rate with its Wilson 95 % interval, CPU seconds) and the JSON::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/seq_alignment.py --n 100 --steps 32
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

from interpretorch.transformers.generation import GENERATION_METHODS
from interpretorch.transformers.seq_models import alignment_accuracy, load_seq_model, make_examples

BASELINE_METHODS = ("integrated_gradients", "ablation")  # the methods with a baseline token


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` of ``n`` trials."""
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def main() -> None:
    """Run every method on both models and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--methods", default=",".join(GENERATION_METHODS))
    ap.add_argument("--targets", default="logprob,logit",
                    help="comma-separated targets: each output word's log-probability and/or its logit")
    ap.add_argument("--special-tokens", default="keep,replace",
                    help="comma-separated baselines of IG and ablation: special tokens kept and/or replaced")
    args = ap.parse_args()
    methods = args.methods.split(",")
    torch.set_num_threads(1)
    out = {}
    print("| model | method | target | special tokens in the baseline | output words | top input word aligned "
          "| Wilson 95 % | CPU seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for task in ("translation", "copy"):
        sm = load_seq_model(task)
        words = sum(len(a) - 1 for _, _, a in make_examples(task, args.n, 3, sm.config.min_words,
                                                            sm.config.max_words, sm.tokenizer))
        for m in methods:
            specials = args.special_tokens.split(",") if m in BASELINE_METHODS else ["(not used)"]
            for target in args.targets.split(","):
                for special in specials:
                    start = time.process_time()
                    acc = alignment_accuracy(sm, [m], n=args.n, steps=args.steps, batch_size=args.batch_size,
                                             target=target, special_tokens=special if m in BASELINE_METHODS
                                             else "keep")[m]
                    sec = time.process_time() - start
                    lo, hi = wilson(acc, words)
                    out[f"{task}/{m}/{target}/{special}"] = {"accuracy": acc, "words": words, "ci95": [lo, hi],
                                                             "seconds": sec}
                    print(f"| {task} | {m} | {target} | {special} | {words} | {100 * acc:.1f} % | "
                          f"{100 * lo:.1f}-{100 * hi:.1f} | {sec:.1f} |", flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
