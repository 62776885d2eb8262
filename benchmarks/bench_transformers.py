"""Transformer explanations: cost against the passes they need, and quality on the tiny ViT with known objects.

``--part cost``: raw attention, rollout, gradient-weighted rollout and AttnLRP on a batch of 8, as ratios to one
forward pass (no gradients) and to one forward + backward pass (autograd.grad to the input, parameters frozen) of
the same model - the tiny ViT (8 synthetic images, 64x64) and the offline MiniLM (8 sentences, cosine similarity
to a fixed embedding, gradients to the word embeddings). Entries are interleaved, medians of ``--repeats``.

``--part quality``: on held-out synthetic images (seed 3; the ViT trained on seed 1 and validated on seed 2),
explaining the true class: pointing game (the map's maximum on the object, tolerance 0 px; and at 4 px) and
Chefer et al. 2021's perturbation test on patches - zero (in input space: the mean colour) the 8x8 patches in
order of the method's patch relevance, most relevant first ("positive", lower AUC is better) or least relevant
first ("negative", higher is better), at 0, 10, ..., 90 % of the patches; AUC of the softmax probability of the
class (and of the accuracy) over that range, normalised to [0, 1].

    python benchmarks/bench_transformers.py --part all [--images 200] [--repeats 5] [--threads 1 --clock cpu]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Callable

import torch

from interpretorch.attribution.integrated import integrated_gradients
from interpretorch.capture import capture
from interpretorch.data.synthetic import make_localisation_set
from interpretorch.metrics.localisation import pointing_chance, pointing_game
from interpretorch.models.vit import load_tiny_vit
from interpretorch.transformers.vision import (attention_rollout, attnlrp, gradient_rollout, raw_attention,
                                               token_gradcam)

METHODS: dict[str, Callable] = {
    "attention (last layer)": raw_attention,
    "rollout": attention_rollout,
    "gradient rollout (Chefer)": gradient_rollout,
    "AttnLRP": attnlrp,
    "token Grad-CAM": token_gradcam,
    "Integrated Gradients": lambda m, x, target, batch_size=None: integrated_gradients(m, x, target,
                                                                                       batch_size=batch_size),
}


def _clock(kind: str) -> Callable[[], float]:
    return time.process_time if kind == "cpu" else time.perf_counter


def _median_times(entries: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float]
                  ) -> dict[str, float]:
    names = list(entries)
    for n in names:  # warm-up
        entries[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            t = clock()
            entries[n]()
            times[n].append(clock() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def cost_vit(repeats: int, clock: Callable[[], float]) -> dict:
    """Seconds and ratios for the tiny ViT, batch 8."""
    lm = load_tiny_vit()
    model = lm.model
    ds = make_localisation_set(8, seed=3)
    x = lm.preprocess.normalize(ds.images)
    y = ds.labels

    def fwd():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        with capture(model, []):
            rows = x.clone().requires_grad_(True)
            torch.autograd.grad(model(rows).gather(1, y[:, None]).sum(), rows)

    entries = {"forward": fwd, "forward+backward": fwd_bwd,
               "attention (last layer)": lambda: raw_attention(model, x, y),
               "rollout": lambda: attention_rollout(model, x, y),
               "gradient rollout (Chefer)": lambda: gradient_rollout(model, x, y),
               "AttnLRP": lambda: attnlrp(model, x, y)}
    return _median_times(entries, repeats, clock)


def cost_minilm(repeats: int, clock: Callable[[], float]) -> dict:
    """Seconds and ratios for the MiniLM, 8 sentences, cosine similarity to a fixed embedding."""
    from interpretorch.transformers import text as T

    tm = T.load_minilm()
    model = tm.model
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "The cat sleeps on the sofa.",
                 "Stock markets fell sharply on Monday.", "A child is riding a bicycle in the park.",
                 "She cooked pasta for dinner.", "The train arrived late again.", "Rain is expected tomorrow."]
    enc = T.encode(tm.tokenizer, sentences)
    ref = T.sentence_embeddings(tm, ["A person makes music."])[0]
    score = T.similarity_score(ref)
    emb = T._embeds(model, enc)

    def fwd():
        with torch.no_grad():
            score(model, emb, enc.attention_mask, False)

    def fwd_bwd():
        with capture(model, []):
            rows = emb.clone().requires_grad_(True)
            torch.autograd.grad(score(model, rows, enc.attention_mask, False).sum(), rows)

    entries = {"forward": fwd, "forward+backward": fwd_bwd,
               "rollout": lambda: T._rollout(model, enc, score, "mean", False, 0),
               "gradient rollout (Chefer)": lambda: T._rollout(model, enc, score, "mean", True, 0),
               "AttnLRP": lambda: T._attnlrp(model, enc, score)}
    return _median_times(entries, repeats, clock)


def _patch_scores(maps: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, H, W) maps -> (B, h*w) mean per patch."""
    b, h, w = maps.shape
    return maps.reshape(b, h // patch, patch, w // patch, patch).mean((2, 4)).reshape(b, -1)


@torch.no_grad()
def perturbation_curves(model, x: torch.Tensor, y: torch.Tensor, patch_scores: torch.Tensor, patch: int,
                        most_first: bool, fractions: list[float], batch_size: int = 64
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probability of the class and correctness (B, S) after zeroing the top / bottom fraction of patches."""
    b, n = patch_scores.shape
    g = int(round(n ** 0.5))
    order = patch_scores.argsort(1, descending=most_first)
    probs, correct = [], []
    for f in fractions:
        k = int(round(f * n))
        keep = torch.ones(b, n, dtype=torch.bool)
        keep.scatter_(1, order[:, :k], False)
        m = keep.reshape(b, 1, g, 1, g, 1).expand(b, 1, g, patch, g, patch).reshape(b, 1, g * patch, g * patch)
        xs = x * m
        out = torch.cat([model(xs[i:i + batch_size]) for i in range(0, b, batch_size)])
        probs.append(out.softmax(1).gather(1, y[:, None])[:, 0])
        correct.append((out.argmax(1) == y).float())
    return torch.stack(probs, 1), torch.stack(correct, 1)


def _auc(curves: torch.Tensor, fractions: list[float]) -> torch.Tensor:
    f = torch.tensor(fractions)
    dx = (f[1:] - f[:-1]) / (f[-1] - f[0])
    return ((curves[:, 1:] + curves[:, :-1]) * 0.5 * dx).sum(1)


def quality(n_images: int, batch_size: int = 8) -> dict:
    """Pointing game and patch-perturbation AUCs per method on held-out synthetic images."""
    lm = load_tiny_vit()
    model = lm.model
    ds = make_localisation_set(n_images, seed=3)
    x = lm.preprocess.normalize(ds.images)
    y = ds.labels
    patch = model.patch
    fractions = [i / 10 for i in range(10)]
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    rows = {}
    for name, fn in METHODS.items():
        t = time.perf_counter()
        e = fn(model, x, target=y, batch_size=batch_size)
        seconds = time.perf_counter() - t
        maps = e.map2d("abs_sum") if e.maps.dim() == 4 else e.maps
        ps = _patch_scores(maps.float(), patch)
        row = {"seconds": seconds,
               "pointing_0px": float(pointing_game(maps, masks=ds.masks, tolerance=0).nanmean()),
               "pointing_4px": float(pointing_game(maps, masks=ds.masks, tolerance=4).nanmean())}
        for label, most in (("positive", True), ("negative", False)):
            p, c = perturbation_curves(model, x, y, ps, patch, most, fractions)
            row[f"{label}_prob_auc"] = float(_auc(p, fractions).mean())
            row[f"{label}_acc_auc"] = float(_auc(c, fractions).mean())
        rows[name] = row
        print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(n_images, (64 // patch) ** 2, generator=g)
    row = {"pointing_0px": float(pointing_chance(masks=ds.masks, tolerance=0).mean()),
           "pointing_4px": float(pointing_chance(masks=ds.masks, tolerance=4).mean())}
    for label, most in (("positive", True), ("negative", False)):
        p, c = perturbation_curves(model, x, y, rand, patch, most, fractions)
        row[f"{label}_prob_auc"] = float(_auc(p, fractions).mean())
        row[f"{label}_acc_auc"] = float(_auc(c, fractions).mean())
    rows["random patches / chance"] = row
    return {"images": n_images, "accuracy": acc, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """Run the chosen parts and print markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("cost", "quality", "all"), default="all")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clock = _clock(args.clock)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "clock": args.clock,
                 "cpu": platform.processor() or platform.machine(), "load_before": load}
    if args.part in ("cost", "all"):
        for model_name, fn in (("tiny ViT", cost_vit), ("MiniLM", cost_minilm)):
            t = fn(args.repeats, clock)
            out[model_name] = t
            print(f"\n{model_name}, batch 8 ({args.clock} clock, {torch.get_num_threads()} threads)\n")
            print("| entry | seconds | x forward | x forward+backward |\n|---|---|---|---|")
            for n, s in t.items():
                print(f"| {n} | {s:.4f} | {s / t['forward']:.2f} | {s / t['forward+backward']:.2f} |")
    if args.part in ("quality", "all"):
        q = quality(args.images)
        out["quality"] = q
        print(f"\nTiny ViT, {q['images']} held-out images, accuracy {q['accuracy']:.3f}\n")
        print("| method | pointing 0 px | pointing 4 px | positive AUC prob (lower better) | negative AUC prob "
              "(higher better) | positive AUC acc | negative AUC acc | seconds |\n|---|---|---|---|---|---|---|---|")
        for n, r in q["rows"].items():
            print(f"| {n} | {r['pointing_0px']:.3f} | {r['pointing_4px']:.3f} | {r['positive_prob_auc']:.3f} | "
                  f"{r['negative_prob_auc']:.3f} | {r['positive_acc_auc']:.3f} | {r['negative_acc_auc']:.3f} | "
                  f"{r.get('seconds', float('nan')):.1f} |")
    out["load_after"] = os.getloadavg()[0]
    out["seconds"] = time.perf_counter() - start
    print(f"\n1-min load average {load:.1f} before, {out['load_after']:.1f} after; whole run {out['seconds']:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
