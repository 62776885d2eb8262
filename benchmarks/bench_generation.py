"""Generation attribution benchmark: Integrated Gradients of every answer token, interpretorch beside Captum's
``LLMGradientAttribution(LayerIntegratedGradients)`` on the same random-weight GPT-2-style model.

Both explain the log-probability of each answer token by the prompt tokens (answer tokens fixed, Captum's
definition), baseline token id 0, Gauss-Legendre steps. interpretorch puts all prompts, answer tokens and steps
through the model in rows of ``--batch-size`` (each row cut at its answer token); Captum runs one
``attribute`` call per prompt and per answer token (``n_steps`` rows each). Reports wall time (median of
``--repeats``), the largest |difference| between the two matrices relative to Captum's largest value, and the
peak resident memory of each (measured in a fresh process per library)::

    PYTHONPATH=src python benchmarks/bench_generation.py --prompts 4 --answer-len 64 --steps 32
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time

import torch


def build(args: argparse.Namespace):
    """The random GPT-2-style model, prompts and answers (seeded)."""
    import transformers

    cfg = transformers.GPT2Config(vocab_size=args.vocab, n_positions=args.prompt_len + args.answer_len + 8,
                                  n_embd=args.dim, n_layer=args.layers, n_head=args.heads,
                                  bos_token_id=0, eos_token_id=0, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(1, args.vocab, (args.prompts, args.prompt_len), generator=gen).tolist()
    answers = torch.randint(1, args.vocab, (args.prompts, args.answer_len), generator=gen).tolist()
    return model, prompts, answers


def _tokenizer(vocab: int):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(vocab)}, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", pad_token="w0")


def run_ours(args, model, prompts, answers) -> list[torch.Tensor]:
    """interpretorch: one call for every prompt."""
    from interpretorch.transformers.generation import attribute_generation

    res = attribute_generation(model, prompts, answers, methods=["integrated_gradients"], steps=args.steps,
                               attribute_generated=False, batch_size=args.batch_size)
    return [r.matrices["integrated_gradients"][:, :args.prompt_len] for r in res]


def run_captum(args, model, prompts, answers) -> list[torch.Tensor]:
    """Captum: one LLMGradientAttribution call per prompt."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    tok = _tokenizer(args.vocab)
    llm = LLMGradientAttribution(LayerIntegratedGradients(model, model.transformer.wte), tok)
    out = []
    for p, a in zip(prompts, answers):
        inp = TextTokenInput(" ".join(f"w{i}" for i in p), tok)
        out.append(llm.attribute(inp, target=torch.tensor(a), n_steps=args.steps).token_attr)
    return out


def _child(which: str, args: argparse.Namespace, queue) -> None:
    torch.set_num_threads(args.threads)
    model, prompts, answers = build(args)
    fn = run_ours if which == "interpretorch" else run_captum
    times, mats = [], None
    for _ in range(args.repeats):
        t = time.perf_counter()
        mats = fn(args, model, prompts, answers)
        times.append(time.perf_counter() - t)
    queue.put({"seconds": statistics.median(times), "times": times,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "matrices": [m.double().tolist() for m in mats]})


def main(argv: list[str] | None = None) -> None:
    """Time both libraries in fresh processes and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--answer-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    results = {}
    for which in ("interpretorch", "captum"):
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=(which, args, q))
        p.start()
        results[which] = q.get()
        p.join()
    ours = [torch.tensor(m) for m in results["interpretorch"].pop("matrices")]
    theirs = [torch.tensor(m) for m in results["captum"].pop("matrices")]
    rel = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, theirs))
    summary = {"settings": vars(args), **results, "max_rel_diff": rel,
               "speedup": results["captum"]["seconds"] / results["interpretorch"]["seconds"]}
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
