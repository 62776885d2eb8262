"""`interpretorch explain-generation "prompt"`: explain each generated token of a sequence model."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from interpretorch.cli.common import UserError, unpickling_refusal

NAME = "explain-generation"
HELP = "explain each token a sequence model generates by the source, prompt and earlier generated tokens"
ALIASES = {"ig": "integrated_gradients", "gxi": "input_x_gradient", "grad_x_input": "input_x_gradient",
           "occlusion": "ablation", "feature_ablation": "ablation", "attention_rollout": "rollout",
           "chefer": "gradient_rollout", "grad_rollout": "gradient_rollout", "attn_lrp": "attnlrp"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    from interpretorch.transformers.generation import DEFAULT_METHODS, GENERATION_METHODS, TARGETS

    parser.add_argument("prompt", help="the prompt; for an encoder-decoder model without --source, the source")
    parser.add_argument("--source", default=None,
                        help="source text of an encoder-decoder model (the prompt then prefixes the answer)")
    parser.add_argument("--target", default=None, help="explain this continuation instead of generating one")
    parser.add_argument("--model", default="translation",
                        help="'translation' (default) or 'copy' (the shipped models), a .pt file written by "
                             "interpretorch.transformers.seq_models, or a local Hugging Face model folder / "
                             "hub-cache name (loaded offline)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods among {', '.join(GENERATION_METHODS)} (default: "
                             f"{','.join(DEFAULT_METHODS)})")
    parser.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate (default 20)")
    parser.add_argument("--score", default="logprob", choices=TARGETS,
                        help="what each row explains: a token's log-probability (default), its logit, log p(token) - "
                             "log p(contrast token) with --contrast, or the whole answer's log-probability")
    parser.add_argument("--contrast", default=None, help="contrast continuation for --score contrastive")
    parser.add_argument("--keep-generated", action="store_true",
                        help="perturb only source and prompt tokens, keeping earlier output tokens fixed (Captum's "
                             "definition; their columns are then 0)")
    parser.add_argument("--ig-steps", type=int, default=32, help="Integrated Gradients steps (default 32)")
    parser.add_argument("--special-tokens", default="keep", choices=("keep", "replace"),
                        help="the baseline of Integrated Gradients and ablation is the padding token at every "
                             "attributed column; 'keep' (default) leaves the tokenizer's special tokens (<bos>, "
                             "<sep>, <eos>...) as they are, so their columns read exactly 0; 'replace' replaces "
                             "them too")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per model call")
    parser.add_argument("--out", default="interpretorch-generation",
                        help="output folder for index.html and results.json")


def _methods(text: str) -> list[str]:
    from interpretorch.transformers.generation import GENERATION_METHODS

    methods = [m.strip().lower().replace("-", "_") for m in text.split(",") if m.strip()]
    methods = [ALIASES.get(m, m) for m in methods]
    unknown = [m for m in methods if m not in GENERATION_METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {unknown or text!r}; choose from {', '.join(GENERATION_METHODS)}")
    return list(dict.fromkeys(methods))


class _Loaded:
    """A model with its encode / decode functions for the command."""

    def __init__(self, model: Any, name: str, encode_prompt, encode_text, tokens, eos_id, pad_id,
                 special_ids: list[int]) -> None:
        self.model, self.name = model, name
        self.encode_prompt, self.encode_text, self.tokens = encode_prompt, encode_text, tokens
        self.eos_id, self.pad_id, self.special_ids = eos_id, pad_id, special_ids


def _load(name: str) -> _Loaded:
    from interpretorch.transformers.seq_models import TASKS, load_seq_model

    if name in TASKS or name.endswith(".pt"):
        if name.endswith(".pt") and not Path(name).is_file():
            raise UserError(f"--model {name!r}: no such weights file")
        import pickle

        try:
            sm = load_seq_model(name)
        except pickle.UnpicklingError as e:
            raise UserError(f"--model {name!r} {unpickling_refusal(e)}") from None
        except (RuntimeError, EOFError, ValueError, OSError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load --model {name!r}: {first}") from None
        tok = sm.tokenizer
        return _Loaded(sm.model, sm.name, sm.encode, tok.encode, tok.tokens, tok.eos_id, tok.pad_id,
                       tok.special_ids)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
        config = AutoConfig.from_pretrained(name, local_files_only=True)
        cls = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        model = cls.from_pretrained(name, local_files_only=True).eval()
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load --model {name!r} (a local folder or a cached hub name): "
                        f"{str(e).splitlines()[0]}") from None
    encdec = bool(getattr(config, "is_encoder_decoder", False))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def encode_text(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(text: str, prefix: str = "") -> tuple[list[int], list[int]]:
        if encdec:
            start = model.config.decoder_start_token_id
            if start is None:
                raise UserError("the model's config has no decoder_start_token_id")
            return list(tok(text)["input_ids"]), [int(start)] + encode_text(prefix)
        if prefix:
            raise UserError("--source is only for encoder-decoder models")
        ids = list(tok(text)["input_ids"])
        if tok.bos_token_id is not None and (not ids or ids[0] != tok.bos_token_id):
            ids = [tok.bos_token_id] + ids
        return [], ids

    return _Loaded(model, Path(name).name or name, encode_prompt, encode_text, tok.convert_ids_to_tokens,
                   tok.eos_token_id, pad, [int(t) for t in tok.all_special_ids])


def run(args: argparse.Namespace) -> int:
    """Explain the generation and write the report; returns the exit code."""
    from interpretorch.transformers.generation import attribute_generation, generate, generation_results
    from interpretorch.transformers.report import write_generation_report

    if not args.prompt.strip() and not args.source:
        raise UserError("the prompt is empty")
    methods = _methods(args.methods)
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be a positive integer, got {args.max_new_tokens}")
    if args.ig_steps < 1:
        raise UserError(f"--ig-steps must be a positive integer, got {args.ig_steps}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if (args.score == "contrastive") != (args.contrast is not None):
        raise UserError("--contrast goes with --score contrastive (and that score needs --contrast)")
    start = time.perf_counter()
    lm = _load(args.model)
    encdec = bool(getattr(lm.model, "is_encoder_decoder", False)
                  or getattr(getattr(lm.model, "config", None), "is_encoder_decoder", False))
    if args.source is not None and not encdec:
        raise UserError("--source is only for encoder-decoder models")
    if encdec and args.source is None:
        source, prompt = lm.encode_prompt(args.prompt)
    else:
        source, prompt = lm.encode_prompt(args.source if encdec else args.prompt,
                                          args.prompt if encdec else "")
    sources = [source] if encdec else None
    if args.target is not None:
        answer = lm.encode_text(args.target)
        if not answer:
            raise UserError("--target has no tokens")
    else:
        answer = generate(lm.model, [prompt], sources=sources, max_new_tokens=args.max_new_tokens,
                          eos_id=lm.eos_id, pad_id=lm.pad_id)[0]
        if not answer:
            raise UserError("the model generated nothing (its first token was the end token); give --target")
    contrasts = None
    if args.contrast is not None:
        contrast = lm.encode_text(args.contrast)
        if len(contrast) != len(answer):
            raise UserError(f"--contrast has {len(contrast)} tokens; it needs one per answer token ({len(answer)})")
        contrasts = [contrast]
    attr = attribute_generation(lm.model, [prompt], [answer], sources=sources, methods=methods, target=args.score,
                                contrasts=contrasts, steps=args.ig_steps, pad_id=lm.pad_id,
                                baseline_id=lm.pad_id, batch_size=args.batch_size,
                                attribute_generated=not args.keep_generated, special_tokens=args.special_tokens,
                                special_ids=lm.special_ids)[0]
    results = generation_results(attr, lm.tokens(attr.column_ids), model=lm.name,
                                 text=args.prompt if args.source is None else args.source,
                                 baseline_token=lm.tokens([lm.pad_id])[0])
    page = write_generation_report(results, args.out)
    print(f"output: {' '.join(results['output_tokens'])}")
    print(f"wrote {page} and {Path(args.out) / 'results.json'} in {time.perf_counter() - start:.1f} s")
    return 0
