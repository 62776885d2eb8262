"""The figure docs/generation_translation.png: one sentence through the shipped translation model, the
output words (rows) against the source words (columns) for several methods, the aligned cell outlined.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/seq_figure.py --out docs/generation_translation.png
"""
from __future__ import annotations

import argparse

import torch

from interpretorch.transformers.generation import attribute_generation, generate
from interpretorch.transformers.seq_models import alignment, load_seq_model

METHODS = ("integrated_gradients", "ablation", "rollout", "gradient_rollout", "attnlrp")
TITLES = {"integrated_gradients": "Integrated Gradients (32 steps)", "ablation": "ablation (pad token)",
          "rollout": "attention rollout", "gradient_rollout": "gradient rollout (Chefer 2021b)",
          "attnlrp": "AttnLRP (logit)"}


def main() -> None:
    """Explain the sentence and draw one heat map per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser()
    ap.add_argument("--sentence", default="the red cat sees a small dog")
    ap.add_argument("--out", default="docs/generation_translation.png")
    args = ap.parse_args()
    sm = load_seq_model("translation")
    tok = sm.tokenizer
    src, prompt = sm.encode(args.sentence)
    answer = generate(sm.model, [prompt], sources=[src], max_new_tokens=10, eos_id=tok.eos_id)[0]
    r = attribute_generation(sm.model, [prompt], [answer], sources=[src], methods=METHODS, steps=32,
                             baseline_id=tok.pad_id, attribute_generated=False)[0]
    rows, cols = tok.tokens(answer), tok.tokens(src)
    aligned = alignment("translation", len(src))
    fig, axes = plt.subplots(1, len(METHODS), figsize=(3.3 * len(METHODS), 3.6), constrained_layout=True)
    for ax, m in zip(axes, METHODS):
        mat = r.matrices[m][:, :len(src)].double()
        span = float(mat.abs().max()) or 1.0
        im = ax.imshow(mat.numpy(), cmap="RdBu_r", vmin=-span, vmax=span)
        ax.set_xticks(range(len(cols)), cols, rotation=60, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        for i, j in enumerate(aligned[:len(rows)]):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.5, ec="black"))
        top = torch.argmax(mat, 1).tolist()
        hits = sum(int(t == a) for t, a in zip(top, aligned))
        ax.set_title(f"{TITLES[m]}\ntop = aligned: {hits}/{len(rows)}", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(f'"{args.sentence}" -> "{tok.decode(answer)}" (rows: output words, columns: source words; '
                 "outlined: the aligned source word)", fontsize=10)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
