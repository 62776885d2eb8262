"""AttnLRP against lxt (Achtibat et al.'s own library) on the same models: the tiny ViT and the offline MiniLM.

lxt 2.1 does not run beside this project's transformers 5 (its BERT patch is written for transformers 4.x and it
imports torchvision at import time, whose only local build needs torch 2.14), so the comparison runs in two
environments and meets in files:

    # 1. our side (development venv): writes inputs and our relevances
    python benchmarks/compare_lxt.py ours --dir /tmp/lxtcmp
    # 2. lxt side (throwaway venv: torch 2.13.0, transformers 4.51.3, lxt 2.1 --no-deps, a stub torchvision)
    PYTHONPATH=/tmp/lxtstub /tmp/lxtvenv/bin/python benchmarks/compare_lxt.py lxt --dir /tmp/lxtcmp
    # 3. compare (either venv)
    python benchmarks/compare_lxt.py compare --dir /tmp/lxtcmp

lxt side: MiniLM through ``lxt.efficient.monkey_patch(modeling_bert)`` (lxt's AttnLRP patch of the Hugging Face
BERT module); the tiny ViT with lxt's own rule functions (``layer_norm_forward`` on every LayerNorm,
``identity_rule_implicit`` on GELU, ``divide_gradient`` by 4 on queries and keys and by 2 on values before
attention, as lxt's attention wrapper does), since lxt has no patch for a custom module.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SENTENCES = ["A man is playing a guitar.", "Someone plays an instrument.", "The cat sleeps on the sofa.",
             "Stock markets fell sharply on Monday."]
REFERENCE = "A person makes music."


def ours(d: Path) -> None:
    """Inputs and our AttnLRP relevances."""
    from interpretorch.data.synthetic import make_localisation_set
    from interpretorch.models.vit import load_tiny_vit
    from interpretorch.transformers import text as T
    from interpretorch.transformers.vision import attnlrp

    lm = load_tiny_vit()
    ds = make_localisation_set(8, seed=3)
    x = lm.preprocess.normalize(ds.images)
    e = attnlrp(lm.model, x, target=ds.labels)
    torch.save({"x": x, "y": ds.labels, "ours": e.raw}, d / "vit.pt")
    tm = T.load_minilm()
    ref = T.sentence_embeddings(tm, [REFERENCE])[0]
    enc = T.encode(tm.tokenizer, SENTENCES)
    rel = T._attnlrp(tm.model, enc, T.similarity_score(ref))
    torch.save({"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "ref": ref, "ours": rel,
                "path": str(T.minilm_path())}, d / "minilm.pt")


def lxt_side(d: Path) -> None:
    """The same relevances with lxt."""
    import torch.nn.functional as F
    from lxt.efficient.patches import layer_norm_forward
    from lxt.efficient.rules import divide_gradient, identity_rule_implicit

    from interpretorch.models.vit import Attention, Mlp, load_tiny_vit

    v = torch.load(d / "vit.pt", weights_only=True)
    model = load_tiny_vit().model

    def attn_forward(self, x, attn_mask=None):
        b, n, c = x.shape
        q, k, val = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, val = divide_gradient(q, 4), divide_gradient(k, 4), divide_gradient(val, 2)
        out = F.scaled_dot_product_attention(q, k, val, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))

    def mlp_forward(self, x):
        return self.fc2(identity_rule_implicit(F.gelu, self.fc1(x)))

    Attention.forward, Mlp.forward, torch.nn.LayerNorm.forward = attn_forward, mlp_forward, layer_norm_forward
    for p in model.parameters():
        p.requires_grad_(False)
    x = v["x"].clone().requires_grad_(True)
    out = model(x)
    out.gather(1, v["y"][:, None]).sum().backward()
    vit_rel = (x * x.grad).detach()

    from lxt.efficient import monkey_patch
    from transformers.models.bert import modeling_bert

    monkey_patch(modeling_bert, verbose=True)
    m = torch.load(d / "minilm.pt", weights_only=True)
    bert = modeling_bert.BertModel.from_pretrained(m["path"], local_files_only=True,
                                                   attn_implementation="eager").eval()
    for p in bert.parameters():
        p.requires_grad_(False)
    emb = bert.get_input_embeddings()(m["input_ids"]).detach().requires_grad_(True)
    hidden = bert(inputs_embeds=emb, attention_mask=m["attention_mask"]).last_hidden_state
    w = m["attention_mask"].float()[:, :, None]
    pooled = (hidden * w).sum(1) / w.sum(1)
    score = (pooled * m["ref"]).sum(-1) / pooled.norm(dim=-1).detach()
    score.sum().backward()
    torch.save({"vit": vit_rel, "minilm": (emb * emb.grad).sum(-1).detach()}, d / "lxt.pt")


def compare(d: Path) -> dict:
    """Pearson r per image / sentence between our relevances and lxt's."""
    v, m, lx = (torch.load(d / f, weights_only=True) for f in ("vit.pt", "minilm.pt", "lxt.pt"))

    def r(a, b):
        a, b = a.flatten().double(), b.flatten().double()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    vit_r = [r(v["ours"][i].sum(0), lx["vit"][i].sum(0)) for i in range(len(v["ours"]))]
    mask = m["attention_mask"].bool()
    txt_r = [r(m["ours"][i][mask[i]], lx["minilm"][i][mask[i]]) for i in range(len(m["ours"]))]
    res = {"vit_r": vit_r, "minilm_r": txt_r,
           "vit_max_abs_diff": float((v["ours"] - lx["vit"]).abs().max()),
           "minilm_max_abs_diff": float((m["ours"] - lx["minilm"]).masked_fill(~mask, 0).abs().max())}
    print(json.dumps(res, indent=1))
    return res


def main() -> None:
    """Run one side or the comparison."""
    ap = argparse.ArgumentParser()
    ap.add_argument("side", choices=("ours", "lxt", "compare"))
    ap.add_argument("--dir", default="/tmp/lxtcmp")
    args = ap.parse_args()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    {"ours": ours, "lxt": lxt_side, "compare": compare}[args.side](d)


if __name__ == "__main__":
    main()
