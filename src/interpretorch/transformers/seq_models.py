"""Two small sequence models with known alignments, and the reproducible script that trains them.

* ``translation``: an encoder-decoder (``nn.Transformer``) that "translates" a sentence of 3-8 distinct words
  word by word through a fixed lexicon and swaps each pair of neighbouring words (as adjective-noun order
  flips between languages), so output word i comes from source word i xor 1 (the last word of an odd-length
  sentence stays in place);
* ``copy``: a decoder-only Transformer (causal ``nn.TransformerEncoder``) that repeats the words between
  ``<bos>`` and ``<sep>``, so output word i comes from prompt token i + 1. The shipped one is trained on
  sentences of exactly 6 words (a fixed offset: the copy is positional); trained on 3-8 words it learns an
  induction mechanism instead, whose attributions split between the copied word and the word before it.

``python -m interpretorch.transformers.seq_models --task translation --out seq_translation.pt`` trains one from
scratch, single-threaded and seeded (same config, same weights on the same platform; the shipped weights
come from ``--task translation`` (one encoder and one decoder layer) and ``--task copy --layers 2 --min-words 6
--max-words 6``, about 5 minutes each on one loaded CPU core), and writes
``{"state_dict", "config", "vocab", "accuracy"}``; ``load_seq_model`` reads it back (the packaged weights when no
path is given, checked against their sha256). Both models follow the protocol of
``interpretorch.transformers.generation`` (``embed_source``, ``embed_target``, ``forward_embeds``).
"""
from __future__ import annotations

import argparse
import hashlib
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.training import seeded_single_thread

PAD, BOS, EOS, SEP = "<pad>", "<bos>", "<eos>", "<sep>"
SOURCE_WORDS = ("the", "a", "red", "blue", "green", "big", "small", "cat", "dog", "bird", "fish", "sees",
                "eats", "likes", "and", "old")
TARGET_WORDS = ("lo", "na", "roso", "bulo", "veri", "grano", "pika", "neko", "inu", "tori", "sakan", "mira",
                "taba", "ama", "kai", "vieja")
LEXICON = dict(zip(SOURCE_WORDS, TARGET_WORDS))
VOCAB = (PAD, BOS, EOS, SEP) + SOURCE_WORDS + TARGET_WORDS
SPECIAL_IDS = tuple(VOCAB.index(t) for t in (PAD, BOS, EOS, SEP))  # the template tokens of both tasks
TASKS = ("translation", "copy")
# sha256 of the packaged weights files, checked when they are loaded
SHA256 = {"translation": "725d0ea9b590589d5f0798514dcaf51ffa01aef05b79fd448aa0ae62454f2dcf",
          "copy": "bce36fffbc0ff832c12f092457a06966456ba7f08469585389cd4fe2c9a42175"}


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary (id 0 is ``<pad>``)."""

    def __init__(self, vocab: Sequence[str] = VOCAB) -> None:
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.pad_id, self.bos_id = self.index[PAD], self.index[BOS]
        self.eos_id, self.sep_id = self.index[EOS], self.index[SEP]

    @property
    def special_ids(self) -> list[int]:
        """The ids of ``<pad>``, ``<bos>``, ``<eos>`` and ``<sep>``."""
        return [self.pad_id, self.bos_id, self.eos_id, self.sep_id]

    def encode(self, text: str) -> list[int]:
        """Token ids of the words of ``text``; an unknown word raises a ValueError naming it."""
        words = text.lower().split()
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise ValueError(f"unknown word(s) {unknown}; the vocabulary is {' '.join(self.vocab[4:])}")
        return [self.index[w] for w in words]

    def tokens(self, ids: Sequence[int]) -> list[str]:
        """The words of ``ids``."""
        return [self.vocab[int(i)] for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids`` without special tokens."""
        return " ".join(w for w in self.tokens(ids) if w not in (PAD, BOS, EOS, SEP))


@dataclass(frozen=True)
class SeqConfig:
    """Everything that determines the trained weights."""

    task: str = "translation"
    seed: int = 0
    data_seed: int = 1
    val_seed: int = 2
    dim: int = 64
    layers: int = 1
    heads: int = 4
    ffn: int = 128
    max_len: int = 12
    min_words: int = 3
    max_words: int = 8
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    n_val: int = 500


class _Positional(nn.Module):
    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(max_len, dim) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.weight.shape[0]:
            raise ValueError(f"sequences of at most {self.weight.shape[0]} tokens, got {x.shape[1]}")
        return x + self.weight[:x.shape[1]]


class TranslationTransformer(nn.Module):
    """Encoder-decoder on ``nn.Transformer`` (pre-norm, no dropout) with learned positions and a linear head."""

    is_encoder_decoder = True
    special_ids = SPECIAL_IDS

    def __init__(self, vocab: int, dim: int = 64, layers: int = 2, heads: int = 4, ffn: int = 128,
                 max_len: int = 12) -> None:
        super().__init__()
        self.vocab_size = vocab
        self.src_embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.tgt_embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.src_pos, self.tgt_pos = _Positional(max_len, dim), _Positional(max_len, dim)
        with warnings.catch_warnings():  # "enable_nested_tensor is True, but ... norm_first": expected, harmless
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(dim, heads, layers, layers, ffn, dropout=0.0, batch_first=True,
                                              norm_first=True)
        self.head = nn.Linear(dim, vocab)

    def embed_source(self, ids: torch.Tensor) -> torch.Tensor:
        """Source token embeddings (B, S, D)."""
        return self.src_embed(ids)

    def get_encoder(self) -> nn.Module:
        """The encoder (the attention methods of generation attribution tell its attentions apart)."""
        return self.transformer.encoder

    def embed_target(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder token embeddings (B, T, D)."""
        return self.tgt_embed(ids)

    def forward_embeds(self, src: torch.Tensor, src_mask: torch.Tensor, tgt: torch.Tensor,
                       tgt_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) from token embeddings and 0/1 padding masks."""
        t = tgt.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf"), device=tgt.device, dtype=tgt.dtype), 1)
        src_pad = src_mask == 0
        out = self.transformer(self.src_pos(src), self.tgt_pos(tgt), tgt_mask=causal,
                               src_key_padding_mask=_float_mask(src_pad, src.dtype),
                               tgt_key_padding_mask=_float_mask(tgt_mask == 0, tgt.dtype),
                               memory_key_padding_mask=_float_mask(src_pad, src.dtype))
        return self.head(out)

    def forward(self, src_ids: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from source and decoder token ids (0 = padding)."""
        return self.forward_embeds(self.embed_source(src_ids), (src_ids != 0).long(), self.embed_target(tgt_ids),
                                   (tgt_ids != 0).long())


def _float_mask(pad: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive key-padding mask (0 or -inf), the same type as the causal mask as nn.Transformer wants."""
    return torch.zeros(pad.shape, dtype=dtype, device=pad.device).masked_fill(pad, float("-inf"))


class CopyTransformer(nn.Module):
    """Decoder-only Transformer: a causal pre-norm ``nn.TransformerEncoder`` with learned positions."""

    is_encoder_decoder = False
    special_ids = SPECIAL_IDS

    def __init__(self, vocab: int, dim: int = 64, layers: int = 2, heads: int = 4, ffn: int = 128,
                 max_len: int = 20) -> None:
        super().__init__()
        self.vocab_size = vocab
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.pos = _Positional(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def embed_source(self, ids: torch.Tensor) -> torch.Tensor:
        """Not used: a decoder-only model has no source."""
        raise TypeError("a decoder-only model has no source")

    def embed_target(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (B, T, D)."""
        return self.embed(ids)

    def forward_embeds(self, src: torch.Tensor | None, src_mask: torch.Tensor | None, tgt: torch.Tensor,
                       tgt_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, T, V) from token embeddings and a 0/1 padding mask."""
        t = tgt.shape[1]
        causal = torch.triu(torch.full((t, t), float("-inf"), device=tgt.device, dtype=tgt.dtype), 1)
        out = self.blocks(self.pos(tgt), mask=causal, src_key_padding_mask=_float_mask(tgt_mask == 0, tgt.dtype))
        return self.head(self.norm(out))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from token ids (0 = padding)."""
        return self.forward_embeds(None, None, self.embed(ids), (ids != 0).long())


def make_examples(task: str, n: int, seed: int, min_words: int = 3, max_words: int = 8,
                  tokenizer: WordTokenizer | None = None) -> list[tuple[list[int], list[int], list[int]]]:
    """``n`` seeded examples (source ids, prompt ids, answer ids incl. ``<eos>``) of ``task``; the words of a
    sentence are distinct, so each output word has one aligned input word."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    tok = tokenizer or WordTokenizer()
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(min_words, max_words + 1, (1,), generator=gen))
        words = [SOURCE_WORDS[i] for i in torch.randperm(len(SOURCE_WORDS), generator=gen)[:k].tolist()]
        ids = tok.encode(" ".join(words))
        if task == "translation":
            order = alignment(task, k)
            answer = tok.encode(" ".join(LEXICON[words[j]] for j in order)) + [tok.eos_id]
            out.append((ids, [tok.bos_id], answer))
        else:
            out.append(([], [tok.bos_id] + ids + [tok.sep_id], ids + [tok.eos_id]))
    return out


def alignment(task: str, n_words: int) -> list[int]:
    """For output word i, the index of its aligned word among the source words (translation) or among the
    prompt tokens, ``<bos>`` included (copy)."""
    if task == "translation":
        return [i ^ 1 if (i ^ 1) < n_words else i for i in range(n_words)]
    if task == "copy":
        return [1 + i for i in range(n_words)]
    raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")


def build_seq_model(config: SeqConfig) -> nn.Module:
    """An untrained model for ``config``."""
    if config.task == "translation":
        return TranslationTransformer(len(VOCAB), config.dim, config.layers, config.heads, config.ffn,
                                      config.max_len)
    if config.task == "copy":
        return CopyTransformer(len(VOCAB), config.dim, config.layers, config.heads, config.ffn,
                               2 * config.max_len)
    raise ValueError(f"unknown task {config.task!r}; choose one of {TASKS}")


def _batch(examples, device="cpu") -> tuple[torch.Tensor, ...]:
    from interpretorch.transformers.generation import pad_rows

    src, _ = pad_rows([s for s, _, _ in examples], 0, torch.device(device))
    dec, _ = pad_rows([p + a[:-1] for _, p, a in examples], 0, torch.device(device))
    labels = torch.full(dec.shape, -100, dtype=torch.long)
    for i, (_, p, a) in enumerate(examples):
        labels[i, len(p) - 1:len(p) - 1 + len(a)] = torch.tensor(a)
    return src, dec, labels


def _logits(model: nn.Module, src: torch.Tensor, dec: torch.Tensor) -> torch.Tensor:
    return model(src, dec) if model.is_encoder_decoder else model(dec)


def sequence_accuracy(model: nn.Module, examples) -> float:
    """Fraction of examples whose greedy continuation equals the answer (up to and including ``<eos>``)."""
    from interpretorch.transformers.generation import generate

    tok = WordTokenizer()
    answers = generate(model, [p for _, p, _ in examples], sources=[s for s, _, _ in examples]
                       if model.is_encoder_decoder else None, max_new_tokens=10, eos_id=tok.eos_id)
    return sum(g == a[:-1] for g, a in zip(answers, [a for _, _, a in examples])) / len(examples)


def train_seq_model(config: SeqConfig = SeqConfig(), verbose: bool = False) -> tuple[nn.Module, float]:
    """Train the model of ``config.task`` from scratch; returns it (eval mode) and its exact-match accuracy on
    ``n_val`` held-out sentences."""
    with seeded_single_thread(config.seed):
        model = build_seq_model(config)
        opt = torch.optim.AdamW(model.parameters(), config.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=config.steps, pct_start=0.1)
        data = make_examples(config.task, config.steps * config.batch_size, config.data_seed, config.min_words,
                             config.max_words)
        start = time.perf_counter()
        model.train()
        for step in range(config.steps):
            src, dec, labels = _batch(data[step * config.batch_size:(step + 1) * config.batch_size])
            logits = _logits(model, src, dec)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if verbose and (step + 1) % 200 == 0:
                print(f"step {step + 1}/{config.steps}: loss {loss.item():.4f}, "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
        model.eval()
        for p in model.parameters():
            p.grad = None
        val = make_examples(config.task, config.n_val, config.val_seed, config.min_words, config.max_words)
        return model, sequence_accuracy(model, val)


def save_seq_model(model: nn.Module, path: str | Path, config: SeqConfig, accuracy: float) -> Path:
    """Write the weights with the config and vocabulary that reproduce them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "config": asdict(config), "vocab": list(VOCAB),
                "accuracy": accuracy}, path)
    return path


@dataclass
class SeqModel:
    """A loaded sequence model with its tokenizer and config."""

    model: nn.Module
    tokenizer: WordTokenizer
    config: SeqConfig
    accuracy: float
    name: str

    def encode(self, text: str, prefix: str = "") -> tuple[list[int], list[int]]:
        """(source ids, prompt ids) for ``text``: the source after ``<bos>`` + ``prefix`` (translation), or the
        prompt ``<bos>`` text ``<sep>`` (copy)."""
        tok = self.tokenizer
        ids = tok.encode(text)
        if not ids:
            raise ValueError("the text has no words")
        if self.model.is_encoder_decoder:
            return ids, [tok.bos_id] + tok.encode(prefix)
        if prefix.strip():
            raise ValueError("the copy model takes no prefix")
        return [], [tok.bos_id] + ids + [tok.sep_id]


def load_seq_model(task_or_path: str | Path = "translation", device: str | torch.device = "cpu") -> SeqModel:
    """The packaged ``"translation"`` or ``"copy"`` model (sha256-checked), or weights written by
    ``save_seq_model``; eval mode."""
    from importlib import resources

    if str(task_or_path) in TASKS:
        name = str(task_or_path)
        data = resources.files("interpretorch.models").joinpath(f"weights/seq_{name}.pt").read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if name in SHA256 and digest != SHA256[name]:
            raise ValueError(f"the packaged seq_{name}.pt has sha256 {digest}, expected {SHA256[name]}")
        import io
        fh = io.BytesIO(data)
    else:
        path = Path(task_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no weights file {str(path)!r}; give 'translation', 'copy' or a .pt file")
        name = path.stem
        fh = open(path, "rb")
    with fh:
        ckpt = torch.load(fh, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not {"state_dict", "config", "vocab"} <= set(ckpt):
        raise ValueError(f"{str(task_or_path)!r} is not a sequence-model checkpoint (state_dict, config, vocab)")
    config = SeqConfig(**ckpt["config"])
    model = build_seq_model(config)
    model.load_state_dict(ckpt["state_dict"], strict=True)
    model.eval().to(device)
    return SeqModel(model, WordTokenizer(ckpt["vocab"]), config, float(ckpt.get("accuracy", float("nan"))), name)


def main(argv: list[str] | None = None) -> None:
    """Command line: train one of the sequence models and write its weights."""
    ap = argparse.ArgumentParser(prog="python -m interpretorch.transformers.seq_models",
                                 description="Train the small translation or copy Transformer (seeded).")
    ap.add_argument("--out", required=True, help="where to write the weights (.pt)")
    defaults = SeqConfig()
    for name, value in asdict(defaults).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = ap.parse_args(argv)
    config = SeqConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    start = time.perf_counter()
    model, acc = train_seq_model(config, verbose=True)
    path = save_seq_model(model, args.out, config, acc)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"exact-match accuracy {acc:.4f}; trained in {time.perf_counter() - start:.1f} s; wrote {path} "
          f"(sha256 {digest})")


if __name__ == "__main__":
    main()


def alignment_accuracy(sm: SeqModel, methods: Sequence[str], n: int = 100, seed: int = 3, steps: int = 32,
                       batch_size: int | None = None, attribute_generated: bool = False,
                       target: str = "logprob", special_tokens: str = "keep") -> dict[str, float]:
    """Per method, the fraction of output words (``<eos>`` excluded) of ``n`` seeded test sentences whose
    top-attributed input word (among the source words, or the prompt tokens for copy) is the aligned one when
    each word's ``target`` (``"logprob"`` or ``"logit"``) is explained; by default the earlier output words stay
    fixed (only source / prompt tokens are perturbed). The baseline is ``<pad>``, with the template tokens kept
    (``special_tokens="keep"``) or replaced too (``"replace"``)."""
    from interpretorch.transformers.generation import attribute_generation

    task = sm.config.task
    examples = make_examples(task, n, seed, sm.config.min_words, sm.config.max_words, sm.tokenizer)
    res = attribute_generation(sm.model, [p for _, p, _ in examples], [a for _, _, a in examples],
                               sources=[s for s, _, _ in examples] if sm.model.is_encoder_decoder else None,
                               methods=methods, steps=steps, baseline_id=sm.tokenizer.pad_id, batch_size=batch_size,
                               attribute_generated=attribute_generated, target=target,
                               special_tokens=special_tokens, special_ids=sm.tokenizer.special_ids)
    hits = {m: 0 for m in methods}
    total = 0
    for (src, prompt, answer), r in zip(examples, res):
        n_words = len(answer) - 1
        aligned = alignment(task, n_words)
        width = len(src) if task == "translation" else len(prompt)
        total += n_words
        for m in methods:
            top = r.matrices[m][:n_words, :width].argmax(1).tolist()
            hits[m] += sum(int(t == a) for t, a in zip(top, aligned))
    return {m: hits[m] / total for m in methods}
