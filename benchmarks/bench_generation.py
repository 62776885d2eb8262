"""Generation attribution benchmark: Integrated Gradients of every answer token, interpretorch beside Captum's
``LLMGradientAttribution(LayerIntegratedGradients)`` on the same random-weight GPT-2-style model.

Both explain the log-probability of each answer token by the prompt tokens (answer tokens fixed, Captum's
definition), baseline token id 0 at every prompt token (``special_tokens="replace"``, Captum's ``TextTokenInput``
without ``skip_tokens``; the random prompts hold no special id), Gauss-Legendre steps. interpretorch (``--gradient-mode auto``, the default)
differentiates in forward mode: one tangent pass over the whole sequence per (prompt, step, prompt token) gives
that token's entry of every answer row, in calls of ``--batch-size`` such rows; ``reverse`` runs one backward per
(prompt, answer token, step) row, cut at its answer token, as Captum does. Captum runs one ``attribute`` call per
prompt and per answer token (``n_steps`` rows each). Reports wall time (median of ``--repeats``, each run in a
fresh process, the libraries alternating so both see the same load; ``cpu_seconds`` is the process CPU time),
the largest |difference| between the two matrices relative to Captum's largest value, and the peak resident
memory of each (``rss_before_mb`` is the resident memory after building the model, before the run, so the
difference is what the attribution added)::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --prompts 4 --answer-len 64 --steps 32

``--in-process`` instead times both libraries in one process on the same model and inputs (one warm-up run each,
then ``--repeats`` interleaved rounds; ``--clock cpu`` takes process CPU time, steadier than wall time on a shared
machine) and reports the median of each and of the per-round ratios; peak memory needs the fresh processes of
the default mode::

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_generation.py --in-process --clock cpu --threads 1
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
                               attribute_generated=False, batch_size=args.batch_size,
                               gradient_mode=args.gradient_mode, special_tokens="replace")
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
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fn = run_ours if which == "interpretorch" else run_captum
    t, c = time.perf_counter(), time.process_time()
    mats = fn(args, model, prompts, answers)
    queue.put({"seconds": time.perf_counter() - t, "cpu_seconds": time.process_time() - c,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": before,
               "matrices": [m.double().tolist() for m in mats]})


def _run(which: str, args: argparse.Namespace) -> dict:
    """One timed run in a fresh process."""
    q = mp.get_context("spawn").Queue()
    p = mp.get_context("spawn").Process(target=_child, args=(which, args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def in_process(args: argparse.Namespace) -> dict:
    """Both libraries in this process, interleaved rounds after one warm-up each; medians of ``--clock``."""
    torch.set_num_threads(args.threads)
    model, prompts, answers = build(args)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    fns = {"interpretorch": run_ours, "captum": run_captum}
    small = argparse.Namespace(**{**vars(args), "steps": 2})
    for fn in fns.values():  # warm-up: imports, first-call dispatch
        fn(small, model, prompts[:1], [a[:4] for a in answers[:1]])
    times: dict[str, list[float]] = {k: [] for k in fns}
    mats = {}
    for _ in range(args.repeats):
        for k, fn in fns.items():
            t = clock()
            mats[k] = fn(args, model, prompts, answers)
            times[k].append(clock() - t)
    rel = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(mats["interpretorch"], mats["captum"]))
    ratios = [c / o for o, c in zip(times["interpretorch"], times["captum"])]
    return {"settings": vars(args), "clock": args.clock,
            **{k: {"median_seconds": statistics.median(v), "times": [round(x, 2) for x in v]}
               for k, v in times.items()},
            "speedup_median_of_rounds": statistics.median(ratios), "speedups": [round(x, 2) for x in ratios],
            "max_rel_diff": rel}


def main(argv: list[str] | None = None) -> None:
    """Time both libraries in fresh processes and print a JSON summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--answer-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64, help="rows per call of interpretorch (0: its default)")
    ap.add_argument("--vocab", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--gradient-mode", default="auto", choices=["auto", "forward", "reverse"])
    ap.add_argument("--skip-captum", action="store_true", help="time interpretorch only")
    ap.add_argument("--in-process", action="store_true",
                    help="both libraries in this process, interleaved rounds (no memory figures)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="--in-process: wall or CPU time")
    args = ap.parse_args(argv)
    if args.batch_size <= 0:
        args.batch_size = None  # the library's default rows per call
    if args.in_process:
        print(json.dumps(in_process(args), indent=2))
        return
    libs = ("interpretorch",) if args.skip_captum else ("interpretorch", "captum")
    runs: dict[str, list[dict]] = {w: [] for w in libs}
    for _ in range(args.repeats):  # alternate the libraries so both see the same machine load
        for which in libs:
            runs[which].append(_run(which, args))
    results = {w: {"seconds": statistics.median(r["seconds"] for r in rs),
                   "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                   "times": [round(r["seconds"], 2) for r in rs],
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                   "rss_before_mb": max(r["rss_before_mb"] for r in rs)} for w, rs in runs.items()}
    if args.skip_captum:
        print(json.dumps({"settings": vars(args), **results}, indent=2))
        return
    ours = [torch.tensor(m) for m in runs["interpretorch"][-1]["matrices"]]
    theirs = [torch.tensor(m) for m in runs["captum"][-1]["matrices"]]
    rel = max(((a - b).abs().max() / b.abs().max()).item() for a, b in zip(ours, theirs))
    paired = [c["seconds"] / o["seconds"] for o, c in zip(runs["interpretorch"], runs["captum"])]
    summary = {"settings": vars(args), **results, "max_rel_diff": rel,
               "speedup": results["captum"]["seconds"] / results["interpretorch"]["seconds"],
               "cpu_speedup": results["captum"]["cpu_seconds"] / results["interpretorch"]["cpu_seconds"],
               "paired_speedups": [round(x, 2) for x in paired]}
    print(json.dumps(summary, indent=2))

if __name__ == "__main__":
    main()
