"""AttnLRP of generated tokens: interpretorch's ``attribute_generation(methods=["attnlrp"])`` beside lxt's own
AttnLRP patches (Achtibat et al.'s library) on the same random-weight LLaMA-style (RMSNorm, rotary embeddings,
gated SiLU MLP, grouped-query causal attention) and GPT-2-style models.

Runs only in a throwaway environment, because lxt 2.1 declares dependencies (zennit, bitsandbytes,
open_clip_torch) that would replace this project's torch::

    python3 -m venv /work/venv-seq
    /work/venv-seq/bin/pip install torch==2.13.0
    /work/venv-seq/bin/pip install lxt==2.1 --no-deps
    /work/venv-seq/bin/pip install transformers==5.24.0 numpy scipy scikit-image matplotlib jinja2 pillow tqdm \
        scikit-learn
    PYTHONPATH=src OMP_NUM_THREADS=1 /work/venv-seq/bin/python benchmarks/compare_lxt_generation.py

lxt 2.1 imports torchvision at import time for its ViT patch, and its BERT module is a copy of transformers
4.x's that does not import under transformers 5; neither is used here, so the script puts empty stand-ins for
both in ``sys.modules`` just before importing lxt (after the models are built, so transformers never sees
the torchvision stand-in); lxt's attention patch replaces each modelling module's ``ALL_ATTENTION_FUNCTIONS``
by a plain dict, to which the script gives back the ``get_interface`` lookup transformers 5 calls.
Ours runs first on the unpatched model; then ``lxt.efficient.monkey_patch`` patches the modelling module and
each answer token's logit is explained by one backward per token, relevance = embedding x gradient summed over
the embedding dimension. Prints, per model, the Pearson r of every matrix row (prompt and earlier answer
columns) and the largest |difference| relative to the largest |relevance|.
"""
from __future__ import annotations

import argparse
import json
import sys
import types

import torch


def _models(vocab: int):
    import transformers

    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, attn_implementation="eager")).eval().double()
    torch.manual_seed(1)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=64, n_layer=3, n_head=4,
        attn_implementation="eager")).eval().double()
    return {"llama": llama, "gpt2": gpt2}


class _Interface(dict):
    """lxt's wrapped attention functions with the lookup transformers 5 uses."""

    def get_interface(self, name: str, default):
        """The wrapped function of ``name``, else ``default`` (the patched eager attention)."""
        return self.get(name, default)


def _lxt_rows(model, prompt: list[int], answer: list[int]) -> torch.Tensor:
    """lxt's relevance of each answer token's logit on the prompt and earlier answer tokens."""
    rows = torch.zeros(len(answer), len(prompt) + len(answer), dtype=torch.float64)
    for p in model.parameters():
        p.requires_grad_(False)
    for i, tok in enumerate(answer):
        ids = torch.tensor([prompt + answer[:i]])
        emb = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=emb, use_cache=False).logits
        logits[0, -1, tok].backward()
        rows[i, :ids.shape[1]] = (emb * emb.grad).sum(-1)[0].detach().double()
    return rows


def main() -> None:
    """Compare both models and print the figures as JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--answer-len", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=100)
    args = ap.parse_args()
    from interpretorch.transformers.generation import attribute_generation, generate

    models = _models(args.vocab)
    gen = torch.Generator().manual_seed(2)
    prompts = torch.randint(1, args.vocab, (args.prompts, args.prompt_len), generator=gen).tolist()
    ours, answers, plain = {}, {}, {}
    for name, model in models.items():
        answers[name] = generate(model, prompts, max_new_tokens=args.answer_len)
        res = attribute_generation(model, prompts, answers[name], methods=["attnlrp"])
        ours[name] = [r.matrices["attnlrp"].double() for r in res]
        # the same backward before lxt's patches: plain gradient x input, to show the comparison discriminates
        plain[name] = [_lxt_rows(model, p, a) for p, a in zip(prompts, answers[name])]

    stand_in = types.ModuleType("lxt.efficient.models.bert")
    stand_in.modeling_bert, stand_in.attnLRP = types.ModuleType("modeling_bert_stand_in"), {}
    sys.modules["lxt.efficient.models.bert"] = stand_in
    if "torchvision" not in sys.modules:
        vt = types.ModuleType("torchvision.models.vision_transformer")
        vt.nn = torch.nn
        tv, tvm = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
        tv.models, tvm.vision_transformer = tvm, vt
        sys.modules.update({"torchvision": tv, "torchvision.models": tvm,
                            "torchvision.models.vision_transformer": vt})
    import lxt
    from lxt.efficient import monkey_patch
    from transformers.models.gpt2 import modeling_gpt2
    from transformers.models.llama import modeling_llama

    for module in (modeling_llama, modeling_gpt2):
        monkey_patch(module)
        if isinstance(module.ALL_ATTENTION_FUNCTIONS, dict):  # lxt 2.1 leaves a dict; transformers 5 calls
            module.ALL_ATTENTION_FUNCTIONS = _Interface(module.ALL_ATTENTION_FUNCTIONS)  # .get_interface
    report = {"lxt": getattr(lxt, "__version__", "2.1"), "torch": torch.__version__}
    for name, model in models.items():
        rs, diffs, r_plain = [], [], []
        for prompt, answer, mine, gxi in zip(prompts, answers[name], ours[name], plain[name]):
            theirs = _lxt_rows(model, prompt, answer)
            for i in range(len(answer)):
                n = len(prompt) + i
                a, b = mine[i, :n], theirs[i, :n]
                rs.append(float(torch.corrcoef(torch.stack([a, b]))[0, 1]))
                r_plain.append(float(torch.corrcoef(torch.stack([gxi[i, :n], b]))[0, 1]))
                diffs.append(float((a - b).abs().max() / b.abs().max()))
        report[name] = {"rows": len(rs), "min_pearson_r": min(rs), "mean_pearson_r": sum(rs) / len(rs),
                        "max_rel_abs_diff": max(diffs),
                        "plain_gradient_x_input_vs_lxt_min_r": min(r_plain)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
