"""Explain each generated token of a decoder-only or encoder-decoder model by the source, prompt and previously
generated tokens: one token x token attribution matrix per sequence.

Teacher forcing: the prompt and the answer (generated here, or given) go through the model together, so one
forward gives the log-probability of every answer token. A sequence's tokens are laid out as *columns*
``source + prompt + answer`` (no source for a decoder-only model; for an encoder-decoder the prompt is the
decoder's start, e.g. ``[decoder_start_token_id]``) and its *rows* are the targets: one per answer token (its
log-probability; its logit with ``target="logit"``, which leaves out the log-sum-exp over the vocabulary that
every row of a log-probability shares; or the contrastive difference log p(answer token) - log p(contrast
token)), or one row for the whole answer's log-probability (``target="sequence"``). Row i never depends on answer
column j >= i (causality).

Methods (the embeddings are those of the model's own token embedding layers, position embeddings excluded):

* ``input_x_gradient``: gradient x embedding, summed over the embedding dimension;
* ``integrated_gradients``: (embedding - baseline embedding) x the path-averaged gradient, on the straight path
  from the baseline sequence's embeddings at every attributed column at once: the baseline token
  (``baseline_id``) at each column, except the special tokens (``<bos>``, ``<sep>``, ``<eos>``...), which keep
  their own embedding under ``special_tokens="keep"`` (the default; their columns are then exactly 0);
* ``ablation``: score(original) - score(column j replaced by ``baseline_id``), or with column j removed from the
  sequence (``ablation="remove"``); one forward per ablated column gives every row; under
  ``special_tokens="keep"`` special tokens are not ablated (their columns are exactly 0);
* ``rollout``: attention rollout through encoder self-attention, causal decoder self-attention and cross-attention
  (``seq_rollout.seq_rollout``), read at the position that predicts each answer token; it ignores the target,
  so one forward per sequence gives every row (rows sum to 1; ``target="sequence"`` sums the answer's rows);
* ``gradient_rollout``: Chefer et al. 2021b's rules for self- and cross-attention relevance
  (``seq_rollout.seq_gradient_rollout``) with the attentions weighted by the gradient of each row's target;
* ``attnlrp``: AttnLRP (Achtibat et al. 2024; ``lrp.sequence_rules``) of each row's target *logit* (the logit
  difference for a contrastive target, which equals the log-probability difference; the sum of the answer's
  logits for ``target="sequence"``), read as relevance x embedding: the softmax rule's bias term, biases and
  position embeddings keep the rest of the logit (conservation).

The attention methods need the attention probabilities: fused attention (``F.scaled_dot_product_attention``,
``nn.MultiheadAttention``) is decomposed while they run, eager attention is a softmax over a 4-D tensor; for an
encoder-decoder the model needs ``get_encoder()`` (Hugging Face models have it) so encoder attentions are
told apart, and each decoder layer runs its self-attention before its cross-attention.

Cost under the one batching rule (``batch_size`` = rows per model call): a gradient method
(``input_x_gradient``, ``integrated_gradients``) of per-token targets runs by default in forward mode
(``gradient_mode="forward"``): a row is one (sequence, integration step, attributed column), a tangent pass over
the whole sequence along that column's embedding minus its reference, which gives the column's entry of every
target row at once; the rows of one (sequence, step) share its primal pass, and no activations are kept for a
backward; activation modules of ``transformers.activations`` get a one-product tangent there (their slope
taken once from the primal) instead of one tangent formula per operation they are written in. In reverse mode
(``gradient_mode="reverse"``, and always for ``target="sequence"``) a row is one (sequence, target row,
integration step), forward and backward over the sequence up to that row's token (the
whole sequence for ``target="sequence"``). ``"auto"`` takes the mode that runs fewer token positions (forward:
columns x sequence length; reverse: 3 x the sum of the rows' prefix lengths) and falls back to reverse mode when
an operation of the model has no forward-mode derivative. Ablation's row is one
(sequence, ablated column) forward plus one unablated forward per sequence; ``gradient_rollout`` and
``attnlrp`` rows are (sequence, target row), one forward and backward each, cut as a gradient row; a
``rollout`` row is one sequence, a forward only. ``attribute_generated=False``
keeps the answer tokens fixed (only source and prompt are perturbed), which is Captum's ``LLMAttribution`` /
``LLMGradientAttribution`` definition; their columns are then zero.

Models: Hugging Face causal LMs (GPT-2, LLaMA, Qwen...) and sequence-to-sequence models (T5, BART, Marian) are
driven through ``inputs_embeds``; any other module (e.g. one built on ``nn.Transformer``) works when it has
``embed_source(ids)``, ``embed_target(ids)`` and ``forward_embeds(src, src_mask, tgt, tgt_mask) -> logits``
and an ``is_encoder_decoder`` attribute (see ``interpretorch.transformers.seq_models``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from interpretorch.attribution.integrated import ig_quadrature
from interpretorch.capture import preserved_state
from interpretorch.core.batching import rows_per_pass
from interpretorch.transformers.lrp import identity_rule, sequence_rules
from interpretorch.transformers.seq_rollout import gradient_heads, seq_gradient_rollout, seq_rollout

DEFAULT_METHODS = ("input_x_gradient", "integrated_gradients", "ablation")
ATTENTION_METHODS = ("rollout", "gradient_rollout", "attnlrp")
GENERATION_METHODS = DEFAULT_METHODS + ATTENTION_METHODS
TARGETS = ("logprob", "logit", "contrastive", "sequence")
METHOD_DOCS = {
    "input_x_gradient": "gradient x token embedding of each answer token's log-probability",
    "integrated_gradients": "Integrated Gradients on the token embeddings from the baseline token's embedding",
    "ablation": "change of the log-probability when a token is replaced by the baseline token or removed",
    "rollout": "attention rollout through encoder, causal decoder and cross-attention (Abnar & Zuidema 2020)",
    "gradient_rollout": "Chefer et al. 2021b's gradient-weighted self- and cross-attention relevance",
    "attnlrp": "AttnLRP (Achtibat et al. 2024) of each answer token's logit, one modified backward per token",
}
ABLATIONS = ("baseline", "remove")
GRADIENT_MODES = ("auto", "forward", "reverse")
SPECIAL_TOKENS = ("keep", "replace")


class SeqAdapter:
    """Uniform access to a sequence model: token embeddings for source and decoder, and logits from embeddings."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        if all(hasattr(model, a) for a in ("embed_source", "embed_target", "forward_embeds")):
            self.style = "protocol"
            self.encoder_decoder = bool(getattr(model, "is_encoder_decoder", False))
        elif hasattr(model, "config") and hasattr(model, "get_input_embeddings"):
            self.style = "hf"
            self.encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        else:
            raise TypeError(f"{type(model).__name__} is not a supported sequence model: give a Hugging Face causal "
                            "or sequence-to-sequence LM, or a module with embed_source, embed_target and "
                            "forward_embeds")

    def _keeps_logits(self) -> bool:
        """Whether the Hugging Face model's forward takes ``logits_to_keep``."""
        import inspect

        try:
            return "logits_to_keep" in inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):
            return False

    def encoder_module(self) -> nn.Module:
        """The encoder of an encoder-decoder model (``get_encoder()``)."""
        get = getattr(self.model, "get_encoder", None)
        if get is None:
            raise TypeError(f"{type(self.model).__name__} has no get_encoder(): the attention methods need it to "
                            "tell encoder attentions from decoder ones")
        return get()

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.model.parameters()).device

    def embed_source(self, ids: torch.Tensor) -> torch.Tensor:
        """Encoder token embeddings (B, S, D)."""
        if self.style == "protocol":
            return self.model.embed_source(ids)
        return self.model.get_encoder().get_input_embeddings()(ids)

    def embed_target(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder token embeddings (B, T, D)."""
        if self.style == "protocol":
            return self.model.embed_target(ids)
        if self.encoder_decoder:
            return self.model.get_decoder().get_input_embeddings()(ids)
        return self.model.get_input_embeddings()(ids)

    def logits(self, src: torch.Tensor | None, src_mask: torch.Tensor | None, tgt: torch.Tensor,
               tgt_mask: torch.Tensor, last_only: bool = False, keep: int | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) at every decoder position from embeddings and 0/1 padding masks; with
        ``last_only`` at least the last position (B, >=1, V), with ``keep`` at least the last ``keep``
        positions: a causal LM then runs its head there only (check ``logits.shape[1]``)."""
        if self.style == "protocol":
            return self.model.forward_embeds(src, src_mask, tgt, tgt_mask)
        if last_only:
            keep = 1
        if keep is not None and not self.encoder_decoder and self._keeps_logits():
            out = self.model(inputs_embeds=tgt, attention_mask=tgt_mask, use_cache=False, logits_to_keep=keep)
            logits = out.logits
            return logits[:, 0] if logits.dim() == 4 else logits
        if self.encoder_decoder:
            out = self.model(inputs_embeds=src, attention_mask=src_mask, decoder_inputs_embeds=tgt,
                             decoder_attention_mask=tgt_mask, use_cache=False)
        else:
            out = self.model(inputs_embeds=tgt, attention_mask=tgt_mask, use_cache=False)
        logits = out.logits
        return logits[:, 0] if logits.dim() == 4 else logits


@dataclass
class GenerationAttribution:
    """One sequence's explanation: ``matrices[method]`` is (rows, columns) with columns ``source + prompt +
    answer`` token ids and one row per answer token (or one for the whole answer); ``scores`` are the rows'
    target values and ``logprobs`` the answer tokens' log-probabilities. With ``attnlrp``, ``lrp_target`` is each
    row's explained logit and ``lrp_softmax_share`` the part of it the softmax rule's bias term keeps (the rest is
    the matrix row's sum plus what biases and position embeddings keep). ``kept_columns`` are the in-scope
    columns holding a special token that the baseline keeps (``special_tokens="keep"``: Integrated Gradients and
    ablation give them exactly 0); ``settings`` records the baseline, steps and options used."""

    source_ids: list[int]
    prompt_ids: list[int]
    answer_ids: list[int]
    target: str
    scores: torch.Tensor
    logprobs: torch.Tensor
    matrices: dict[str, torch.Tensor] = field(default_factory=dict)
    lrp_target: torch.Tensor | None = None
    lrp_softmax_share: torch.Tensor | None = None
    kept_columns: list[int] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    @property
    def column_ids(self) -> list[int]:
        """The token ids of the columns: source, prompt, answer."""
        return self.source_ids + self.prompt_ids + self.answer_ids

    @property
    def n_inputs(self) -> int:
        """How many columns precede the answer (source + prompt)."""
        return len(self.source_ids) + len(self.prompt_ids)


def _ids(seq: object, what: str) -> list[int]:
    if isinstance(seq, torch.Tensor):
        seq = seq.reshape(-1).tolist()
    try:
        out = [int(t) for t in seq]  # type: ignore[union-attr]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be a sequence of token ids") from e
    return out


def pad_rows(rows: list[list[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists into (B, T) ids and a 0/1 mask."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


def _token_scores(logits: torch.Tensor, positions: torch.Tensor, tokens: torch.Tensor,
                  contrast: torch.Tensor | None, raw: bool = False) -> torch.Tensor:
    """Per-token targets (B, N) from logits (B, T, V) read at ``positions`` (B, N) for ``tokens`` (B, N): log-
    probabilities, or with ``raw`` the logits themselves."""
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
    picked = logits[rows, positions.clamp(0, logits.shape[1] - 1)]  # padded entries: any position, weight 0
    if picked.dtype in (torch.float16, torch.bfloat16):
        picked = picked.float()
    logp = picked if raw else F.log_softmax(picked, dim=-1)
    s = logp.gather(-1, tokens[..., None])[..., 0]
    if contrast is not None:
        s = s - logp.gather(-1, contrast[..., None])[..., 0]
    return s


@dataclass
class _Seq:
    source: list[int]
    prompt: list[int]
    answer: list[int]
    contrast: list[int] | None

    @property
    def decoder(self) -> list[int]:
        return self.prompt + self.answer


def _check_inputs(prompts, answers, sources, contrasts, target, encoder_decoder) -> list[_Seq]:
    prompts = [_ids(p, "each prompt") for p in prompts]
    answers = [_ids(a, "each answer") for a in answers]
    if not prompts or len(prompts) != len(answers):
        raise ValueError(f"give one answer per prompt (got {len(prompts)} prompts and {len(answers)} answers)")
    if encoder_decoder:
        if sources is None or len(sources) != len(prompts):
            raise ValueError("an encoder-decoder model needs one source per prompt")
        sources = [_ids(s, "each source") for s in sources]
        if any(not s for s in sources):
            raise ValueError("every source needs at least one token")
    elif sources is not None and any(len(_ids(s, "each source")) for s in sources):
        raise ValueError("a decoder-only model takes no source; put the text in the prompt")
    else:
        sources = [[] for _ in prompts]
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {TARGETS}")
    if target == "contrastive":
        if contrasts is None or len(contrasts) != len(prompts):
            raise ValueError("a contrastive target needs one contrast sequence per answer")
        contrasts = [_ids(c, "each contrast") for c in contrasts]
        for a, c in zip(answers, contrasts):
            if len(a) != len(c):
                raise ValueError(f"a contrast must have one token per answer token ({len(c)} != {len(a)})")
    elif contrasts is not None:
        raise ValueError("contrast tokens are only used with target='contrastive'")
    for p, a in zip(prompts, answers):
        if not p:
            raise ValueError("every prompt needs at least one token (a BOS or decoder start token)")
        if not a:
            raise ValueError("every answer needs at least one token")
    return [_Seq(s, p, a, None if contrasts is None else c)
            for s, p, a, c in zip(sources, prompts, answers, contrasts or [None] * len(prompts))]


def _vocab_size(adapter: SeqAdapter) -> int | None:
    """The number of token embeddings of the decoder, when the model says."""
    if adapter.style == "hf":
        return int(adapter.model.get_input_embeddings().num_embeddings)
    emb = getattr(adapter.model, "vocab_size", None)
    return int(emb) if isinstance(emb, int) else None


def _check_vocab(adapter: SeqAdapter, seqs: list[_Seq], special: dict[str, int]) -> None:
    """Raise a ValueError naming any token id outside the model's vocabulary."""
    vocab = _vocab_size(adapter)
    for name, tid in special.items():
        if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0 or (vocab is not None and tid >= vocab):
            raise ValueError(f"{name} {tid!r} is not a token id of this model (vocabulary of {vocab})")
    for s in seqs:
        ids = s.source + s.decoder + (s.contrast or [])
        bad = [t for t in ids if t < 0 or (vocab is not None and t >= vocab)]
        if bad:
            raise ValueError(f"token id(s) {bad[:5]} are outside the model's vocabulary of {vocab}")


def _weights(seq: _Seq, target: str) -> torch.Tensor:
    """(rows, N): row r's score is weights[r] . per-token scores."""
    n = len(seq.answer)
    return torch.ones(1, n) if target == "sequence" else torch.eye(n)


def attribute_generation(model: nn.Module, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[int]], *,
                         sources: Sequence[Sequence[int]] | None = None, methods: Sequence[str] = DEFAULT_METHODS,
                         target: str = "logprob", contrasts: Sequence[Sequence[int]] | None = None,
                         baseline_id: int = 0, steps: int = 32, ig_method: str = "gausslegendre",
                         ablation: str = "baseline", attribute_generated: bool = True,
                         pad_id: int = 0, batch_size: int | None = None,
                         gradient_mode: str = "auto", special_tokens: str = "keep",
                         special_ids: Sequence[int] | None = None) -> list[GenerationAttribution]:
    """Token x token attributions of each answer token (rows) to source, prompt and earlier answer tokens
    (columns), one ``GenerationAttribution`` per sequence; the model is left unchanged.

    The baseline of Integrated Gradients (the path's start) and of ablation (the replacement token) is
    ``baseline_id`` at every attributed column, except, with ``special_tokens="keep"`` (the default), the columns
    holding one of ``special_ids`` (a tokenizer's ``all_special_ids``; by default the ids the model declares:
    ``model_special_ids``), which keep their own token: their IG and ablation entries are exactly 0.
    ``special_tokens="replace"`` replaces them too (Captum's ``LLMAttribution`` default; its ``TextTokenInput(...,
    skip_tokens=special_ids)`` is ``"keep"``). Why ``"keep"`` is the default: the baseline stays a sequence of
    the model's own template (``<bos> <pad> ... <sep>``, the reference Captum's BERT tutorials build as ``[CLS]
    [PAD]... [SEP]``), and the question is which content token a generated token comes from. Explaining the
    log-probability, IG then credits the template tokens with what the log-sum-exp over the vocabulary moves
    along a path that removes them; on the shipped copy model that put ``<sep>`` / ``<bos>`` on top for 82 of
    600 output words (``benchmarks/README.md``, "Sequence models"). What it costs: a special token's own
    contribution is not shown (its column reads 0, not "unimportant"). Gradient x input (no baseline token),
    rollout, gradient rollout and AttnLRP do not use the option."""
    adapter = SeqAdapter(model)
    seqs = _check_inputs(prompts, answers, sources, contrasts, target, adapter.encoder_decoder)
    methods = list(methods)
    bad = [m for m in methods if m not in GENERATION_METHODS]
    if bad or not methods:
        raise ValueError(f"unknown generation method(s) {bad}; choose from {GENERATION_METHODS}")
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {ABLATIONS}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if gradient_mode not in GRADIENT_MODES:
        raise ValueError(f"unknown gradient_mode {gradient_mode!r}; choose one of {GRADIENT_MODES}")
    _check_vocab(adapter, seqs, {"baseline_id": baseline_id, "pad_id": pad_id})
    if special_tokens not in SPECIAL_TOKENS:
        raise ValueError(f"unknown special_tokens {special_tokens!r}; choose one of {SPECIAL_TOKENS}")
    known = model_special_ids(model) if special_ids is None else _ids(special_ids, "special_ids")
    keep_ids = frozenset(known) if special_tokens == "keep" else frozenset()
    rows = rows_per_pass(batch_size, adapter.device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            plain = [_Seq(s.source, s.prompt, s.answer, None) for s in seqs]
            everyone = [(b, None) for b in range(len(seqs))]
            logprobs = _ablation_scores(adapter, plain, everyone, ablation, baseline_id, pad_id, rows)
            clean = logprobs if target not in ("contrastive", "logit") else _ablation_scores(
                adapter, seqs, everyone, ablation, baseline_id, pad_id, rows, raw=target == "logit")
        results = []
        for s, lp, c in zip(seqs, logprobs, clean):
            w = _weights(s, target).to(device=c.device, dtype=c.dtype)
            results.append(GenerationAttribution(
                s.source, s.prompt, s.answer, target, (w @ c).detach().cpu(), lp.detach().cpu(),
                kept_columns=_kept_columns(s, keep_ids, attribute_generated),
                settings={"baseline_id": baseline_id, "special_tokens": special_tokens,
                          "special_ids": sorted(keep_ids), "steps": steps, "ig_method": ig_method,
                          "ablation": ablation, "attribute_generated": attribute_generated}))
        for m in methods:
            if m == "ablation":
                mats = _ablation(adapter, seqs, clean, target, ablation, baseline_id, pad_id, rows,
                                 attribute_generated, keep_ids)
            elif m in ATTENTION_METHODS:
                mats, kept = _attention_based(adapter, seqs, target, m, pad_id, rows, attribute_generated)
                if m == "attnlrp":
                    for r, k in zip(results, kept):
                        r.lrp_target, r.lrp_softmax_share = k[:, 0], k[:, 1]
            else:
                mats = _gradient_any(adapter, seqs, target, m, baseline_id, steps, ig_method, pad_id, rows,
                                     attribute_generated, gradient_mode, keep_ids)
                if m == "integrated_gradients":
                    for r, mat in zip(results, mats):
                        mat[:, r.kept_columns] = 0  # kept at their own embedding: no path, exactly 0
            for r, mat in zip(results, mats):
                r.matrices[m] = mat
        return results
    finally:
        model.train(was_training)


def _in_scope(seq: _Seq, attribute_generated: bool) -> list[int]:
    n_in = len(seq.source) + len(seq.prompt)
    return list(range(n_in + (len(seq.answer) if attribute_generated else 0)))


def _kept_columns(seq: _Seq, keep_ids: frozenset[int], attribute_generated: bool) -> list[int]:
    """The in-scope columns whose token the baseline keeps (a special token under ``special_tokens="keep"``)."""
    cols = seq.source + seq.decoder
    return [j for j in _in_scope(seq, attribute_generated) if cols[j] in keep_ids]


def _reference_ids(ids: torch.Tensor, baseline_id: int, keep_ids: frozenset[int]) -> torch.Tensor:
    """The baseline's token ids: ``baseline_id`` everywhere except at the tokens of ``keep_ids``."""
    base = torch.full_like(ids, baseline_id)
    if not keep_ids:
        return base
    keep = torch.isin(ids, torch.tensor(sorted(keep_ids), dtype=ids.dtype, device=ids.device))
    return torch.where(keep, ids, base)


def model_special_ids(model: nn.Module) -> list[int]:
    """The special token ids a model declares: ``special_ids`` of a protocol model (the shipped ones: ``<pad>``,
    ``<bos>``, ``<eos>``, ``<sep>``), or the bos / eos / pad / sep / cls / mask / decoder-start ids of a Hugging
    Face model's config (a tokenizer's ``all_special_ids`` may name more: pass them as ``special_ids``)."""
    own = getattr(model, "special_ids", None)
    if own is not None:
        return _ids(own, "the model's special_ids")
    config = getattr(model, "config", None)
    out: set[int] = set()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "cls_token_id", "mask_token_id",
                 "decoder_start_token_id"):
        v = getattr(config, name, None)
        for t in v if isinstance(v, (list, tuple)) else [v]:
            if isinstance(t, int) and not isinstance(t, bool) and t >= 0:
                out.add(t)
    return sorted(out)


def _gradient(adapter: SeqAdapter, seqs: list[_Seq], target: str, method: str, baseline_id: int, steps: int,
              ig_method: str, pad_id: int, rows: int, attribute_generated: bool,
              keep_ids: frozenset[int] = frozenset()) -> list[torch.Tensor]:
    """Gradient x input or Integrated Gradients: rows are (sequence, target row, step)."""
    dev = adapter.device
    if method == "integrated_gradients":
        alphas, wts = ig_quadrature(steps, ig_method)
    else:
        alphas, wts = [1.0], [1.0]
    weights = [_weights(s, target) for s in seqs]
    out = [torch.zeros(w.shape[0], len(s.source) + len(s.decoder), dtype=torch.float64)
           for s, w in zip(seqs, weights)]
    jobs = [(b, r, k) for b, w in enumerate(weights) for r in range(w.shape[0]) for k in range(len(alphas))]
    for chunk in _gradient_chunks(jobs, seqs, target, rows):
        cs = [seqs[b] for b, _, _ in chunk]
        # row r of a per-token target reads logits up to decoder position P - 1 + r: later tokens are cut
        dec_ids, dec_mask = pad_rows([s.decoder if target == "sequence" else s.decoder[:len(s.prompt) + r]
                                  for s, (_, r, _) in zip(cs, chunk)], pad_id, dev)
        with torch.no_grad():
            dec_x = adapter.embed_target(dec_ids)
            dec_0 = adapter.embed_target(_reference_ids(dec_ids, baseline_id, keep_ids))
        scope_dec = torch.zeros(dec_ids.shape, dtype=torch.bool, device=dev)
        for i, s in enumerate(cs):
            n = len(s.prompt) + (len(s.answer) if attribute_generated else 0)
            scope_dec[i, :n] = True
        alpha = torch.tensor([alphas[k] for _, _, k in chunk], dtype=dec_x.dtype, device=dev)
        if method == "integrated_gradients":
            dec_in = torch.where(scope_dec[..., None], dec_0 + alpha[:, None, None] * (dec_x - dec_0), dec_x)
        else:
            dec_in = dec_x
        dec_in = dec_in.detach().requires_grad_(True)
        src_in = src_mask = src_x = src_0 = None
        if adapter.encoder_decoder:
            src_ids, src_mask = pad_rows([s.source for s in cs], pad_id, dev)
            with torch.no_grad():
                src_x = adapter.embed_source(src_ids)
                src_0 = adapter.embed_source(_reference_ids(src_ids, baseline_id, keep_ids))
            if method == "integrated_gradients":
                src_in = src_0 + alpha[:, None, None] * (src_x - src_0)
            else:
                src_in = src_x
            src_in = src_in.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = adapter.logits(src_in, src_mask, dec_in, dec_mask, last_only=target != "sequence")
            pos, tok, con = _targets(cs, dev)
            if target == "sequence":
                per_token = _token_scores(logits, pos, tok, con)  # (rows, Nmax); target 'sequence' 
                w = torch.zeros_like(per_token)
                for i, (b, r, _) in enumerate(chunk):
                    w[i, :len(seqs[b].answer)] = weights[b][r].to(w)
                score = (w * per_token).sum()
            else:  # row r explains answer token r only, read at the last position (rows of one length)
                pick = torch.tensor([r for _, r, _ in chunk], device=dev)[:, None]
                score = _token_scores(logits[:, -1:], torch.zeros_like(pick), tok.gather(1, pick),
                                      None if con is None else con.gather(1, pick), target == "logit").sum()
            leaves = [dec_in] + ([src_in] if src_in is not None else [])
            grads = torch.autograd.grad(score, leaves)
        ref_dec = dec_0 if method == "integrated_gradients" else torch.zeros_like(dec_x)
        contrib_dec = (grads[0] * (dec_x - ref_dec)).sum(-1) * scope_dec
        if src_in is not None:
            ref_src = src_0 if method == "integrated_gradients" else torch.zeros_like(src_x)
            contrib_src = (grads[1] * (src_x - ref_src)).sum(-1) * src_mask
        for i, (b, r, k) in enumerate(chunk):
            s = seqs[b]
            ns, nd = len(s.source), len(s.decoder)
            if src_in is not None:
                out[b][r, :ns] += wts[k] * contrib_src[i, :ns].detach().double().cpu()
            nd = min(nd, contrib_dec.shape[1])
            out[b][r, ns:ns + nd] += wts[k] * contrib_dec[i, :nd].detach().double().cpu()
    return [o.to(_out_dtype(adapter)) for o in out]


def _forward_cost(seqs: list[_Seq], attribute_generated: bool) -> tuple[int, int]:
    """Token positions run per integration step by the reverse path (forward + backward of every target row,
    counted 3x) and by the forward-mode path (one primal plus one tangent pass per attributed column)."""
    rev = fwd = 0
    for s in seqs:
        ns, p, n = len(s.source), len(s.prompt), len(s.answer)
        rev += 3 * sum(ns + p + t for t in range(n))
        fwd += (ns + p + n) * (1 + len(_in_scope(s, attribute_generated)))
    return rev, fwd


@contextlib.contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    """Turn off the fused ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` inference path, which has
    no forward-mode derivative, and restore the setting after."""
    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


class _ElementwiseTangent(torch.autograd.Function):
    """An elementwise activation whose forward-mode tangent is one product, slope x tangent, with the slope taken
    once from the primal (instead of the tangent formula of each operation the activation is written in)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """The activation's output and its elementwise derivative at ``x``."""
        from torch.func import jvp

        return jvp(module.forward, (x,), (torch.ones_like(x),))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        """Keep the slope for the tangent."""
        ctx.slope = output[1]
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor, module_t) -> tuple[torch.Tensor, None]:
        """The output's tangent (the slope has none)."""
        return x_t * ctx.slope, None

    @staticmethod
    def backward(ctx, *grads):
        """Not used: the rule serves the forward-mode pass only."""
        raise RuntimeError("_ElementwiseTangent is forward-mode only")


@contextlib.contextmanager
def _fused_activation_tangents(model: nn.Module) -> Iterator[None]:
    """Give Hugging Face activation modules (``transformers.activations``: elementwise functions such as GPT-2's
    tanh GELU, written out in a chain of products) a one-product tangent during a forward-mode pass: the module
    runs on an empty slice and its output comes from ``_ElementwiseTangent`` (the same values, up to rounding);
    hooks removed after."""
    saved: dict[int, torch.Tensor] = {}

    def pre(m, args):
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() == 0 or len(args) > 1:
            return None
        saved[id(m)] = args[0]
        return (args[0][..., :0],)

    def post(m, args, out):
        x = saved.pop(id(m), None)
        return None if x is None else _ElementwiseTangent.apply(x, m)[0]

    mods = [m for m in model.modules() if type(m).__module__.startswith("transformers.activations")]
    handles = [h for m in mods for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _HeadReached(Exception):
    """Raised by a hook to stop a forward at the model's output head."""


def _stop_at_head(box: list[torch.Tensor], args: tuple) -> None:
    box.append(args[0])
    raise _HeadReached


def _output_head(adapter: SeqAdapter) -> nn.Module | None:
    """The Hugging Face model's output embedding module (its LM head), or None."""
    if adapter.style != "hf":
        return None
    head = adapter.model.get_output_embeddings()
    return head if isinstance(head, nn.Module) else None


def _head_gradient(adapter: SeqAdapter, head: nn.Module, src: torch.Tensor | None, src_mask: torch.Tensor | None,
                   dec: torch.Tensor, dec_mask: torch.Tensor, keep: int, pos_from_end: torch.Tensor,
                   tok: torch.Tensor, con: torch.Tensor | None, valid: torch.Tensor,
                   raw: bool = False) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The gradient of every answer token's score with respect to the LM head's input (rows, positions, D) and
    each token's position there (rows, N), by one backward through the head and what follows it; None when the
    head is not run once on one input per logit position (then the full logits are differentiated)."""
    box: list[torch.Tensor] = []

    def leaf(m, args):
        if box or not args or not isinstance(args[0], torch.Tensor):
            box.append(None)
            return None
        box.append(args[0].detach().requires_grad_(True))
        return (box[0],) + tuple(args[1:])

    handle = head.register_forward_pre_hook(leaf)
    try:
        with torch.enable_grad():
            logits = adapter.logits(src, src_mask, dec, dec_mask, keep=keep)
            if len(box) != 1 or box[0] is None or tuple(box[0].shape[:2]) != tuple(logits.shape[:2]):
                return None
            q = (pos_from_end + logits.shape[1]).clamp(0, logits.shape[1] - 1)
            score = (_token_scores(logits, q, tok, con, raw) * valid).sum()
            g, = torch.autograd.grad(score, box[0])
    finally:
        handle.remove()
    return g.detach(), q


def _gradient_forward(adapter: SeqAdapter, seqs: list[_Seq], target: str, method: str, baseline_id: int,
                      steps: int, ig_method: str, pad_id: int, rows: int, attribute_generated: bool,
                      keep_ids: frozenset[int] = frozenset()) -> list[torch.Tensor]:
    """Gradient x input or Integrated Gradients of per-token targets by forward-mode differentiation: a row is
    one (sequence, step, attributed column); its tangent is the column's embedding minus its reference, and one
    tangent pass over the whole sequence gives that column's entry of every target row at once. The primal of
    a (sequence, step) is shared by its columns (``torch.func.jvp`` under ``vmap``)."""
    from torch.func import jvp, vmap
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = adapter.device
    if method == "integrated_gradients":
        alphas, wts = ig_quadrature(steps, ig_method)
    else:
        alphas, wts = [1.0], [1.0]
    out = [torch.zeros(len(s.answer), len(s.source) + len(s.decoder), dtype=torch.float64) for s in seqs]
    # the attributed columns of each sequence; under IG a kept column (its baseline is itself) has a zero tangent
    skip = [set(_kept_columns(s, keep_ids, attribute_generated)) if method == "integrated_gradients" else set()
            for s in seqs]
    cols = [[c for c in _in_scope(s, attribute_generated) if c not in sk] for s, sk in zip(seqs, skip)]
    n_cols = max(1, max(len(c) for c in cols))
    per_call = max(1, rows // n_cols)  # primal rows (sequence, step) per call
    dirs = min(n_cols, rows)  # columns per call
    jobs = [(b, k) for b in range(len(seqs)) for k in range(len(alphas))]
    for start in range(0, len(jobs), per_call):
        chunk = jobs[start:start + per_call]
        cs = [seqs[b] for b, _ in chunk]
        dec_ids, dec_mask = pad_rows([s.decoder for s in cs], pad_id, dev)
        with torch.no_grad():
            dec_x = adapter.embed_target(dec_ids)
            dec_0 = adapter.embed_target(_reference_ids(dec_ids, baseline_id, keep_ids))
        scope_dec = torch.zeros(dec_ids.shape, dtype=torch.bool, device=dev)
        for i, s in enumerate(cs):
            scope_dec[i, :len(s.prompt) + (len(s.answer) if attribute_generated else 0)] = True
        alpha = torch.tensor([alphas[k] for _, k in chunk], dtype=dec_x.dtype, device=dev)[:, None, None]
        ig = method == "integrated_gradients"
        dec_in = torch.where(scope_dec[..., None], dec_0 + alpha * (dec_x - dec_0), dec_x) if ig else dec_x
        delta_dec = (dec_x - (dec_0 if ig else 0)) * scope_dec[..., None]
        src_in = src_mask = delta_src = None
        if adapter.encoder_decoder:
            src_ids, src_mask = pad_rows([s.source for s in cs], pad_id, dev)
            with torch.no_grad():
                src_x = adapter.embed_source(src_ids)
                src_0 = adapter.embed_source(_reference_ids(src_ids, baseline_id, keep_ids))
            src_in = src_0 + alpha * (src_x - src_0) if ig else src_x
            delta_src = (src_x - (src_0 if ig else 0)) * src_mask[..., None]
        # positions that predict the answer tokens: a causal LM runs its head on the last `keep` positions only
        width = dec_ids.shape[1]
        keep = width - min(len(s.prompt) for s in cs) + 1
        pos, tok, con = _targets(cs, dev)
        valid = torch.zeros(pos.shape, dtype=torch.bool, device=dev)
        for i, s in enumerate(cs):
            valid[i, :len(s.answer)] = True
        head = _output_head(adapter)
        head_grad = None if head is None else _head_gradient(adapter, head, src_in, src_mask, dec_in, dec_mask,
                                                             keep, pos - width, tok, con, valid,
                                                             target == "logit")

        def scores(src: torch.Tensor | None, dec: torch.Tensor) -> torch.Tensor:
            logits = adapter.logits(src, src_mask, dec, dec_mask, keep=keep)
            return _token_scores(logits, pos - (width - logits.shape[1]), tok, con, target == "logit")

        def hidden(src: torch.Tensor | None, dec: torch.Tensor) -> torch.Tensor:
            box: list[torch.Tensor] = []
            handle = head.register_forward_pre_hook(lambda m, a: _stop_at_head(box, a))
            try:
                adapter.logits(src, src_mask, dec, dec_mask, keep=keep)
            except _HeadReached:
                pass
            finally:
                handle.remove()
            return box[0]

        fn = scores if head_grad is None else hidden
        rows_i = torch.arange(len(cs), device=dev)[:, None]
        for c0 in range(0, n_cols, dirs):
            c1 = min(n_cols, c0 + dirs)
            t_dec = torch.zeros(c1 - c0, *dec_in.shape, dtype=dec_in.dtype, device=dev)
            t_src = None if src_in is None else torch.zeros(c1 - c0, *src_in.shape, dtype=src_in.dtype,
                                                             device=dev)
            idx_src, idx_dec = [], []
            for i, ((b, _), s) in enumerate(zip(chunk, cs)):
                ns = len(s.source)
                for d, c in enumerate(cols[b][c0:c1]):
                    (idx_src if c < ns else idx_dec).append((d, i, c if c < ns else c - ns))
            for t, delta, idx in ((t_src, delta_src, idx_src), (t_dec, delta_dec, idx_dec)):
                if idx:
                    d, i, j = torch.tensor(idx, device=dev).unbind(1)
                    t[d, i, j] = delta[i, j]
            with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), _no_mha_fastpath(), \
                    _fused_activation_tangents(adapter.model):
                if src_in is None:
                    dot = vmap(lambda td: jvp(lambda d: fn(None, d), (dec_in,), (td,))[1])(t_dec)
                else:
                    dot = vmap(lambda ts, td: jvp(fn, (src_in, dec_in), (ts, td))[1])(t_src, t_dec)
                if head_grad is not None:  # the head is position-wise: d score / d (head input) . tangent
                    g, q = head_grad
                    dot = (dot[:, rows_i, q] * g[rows_i, q]).sum(-1)
            dot = dot.detach().double().cpu()  # (columns, rows, N)
            for i, (b, k) in enumerate(chunk):
                n, here = len(seqs[b].answer), cols[b][c0:c1]
                if here:
                    out[b][:, here] += wts[k] * dot[:len(here), i, :n].T
    return [o.to(_out_dtype(adapter)) for o in out]


def _gradient_any(adapter: SeqAdapter, seqs: list[_Seq], target: str, method: str, baseline_id: int, steps: int,
                  ig_method: str, pad_id: int, rows: int, attribute_generated: bool,
                  mode: str, keep_ids: frozenset[int] = frozenset()) -> list[torch.Tensor]:
    """The gradient method by forward-mode differentiation (one tangent pass per attributed column gives every
    target row) or by reverse mode (one backward per target row); ``auto`` takes the one that runs fewer
    token positions and falls back to reverse mode when the model has an operation without forward-mode
    derivative."""
    if target == "sequence" and mode == "forward":
        raise ValueError("gradient_mode='forward' explains per-token targets; target='sequence' has one row, "
                         "use 'reverse' or 'auto'")
    if mode == "auto":
        rev, fwd = _forward_cost(seqs, attribute_generated)
        mode = "forward" if target != "sequence" and fwd < rev else "reverse"
        if mode == "forward":
            try:
                return _gradient_forward(adapter, seqs, target, method, baseline_id, steps, ig_method, pad_id,
                                         rows, attribute_generated, keep_ids)
            except (NotImplementedError, RuntimeError) as e:
                if "forward AD" not in str(e) and "vmap" not in str(e):
                    raise
                mode = "reverse"
    if mode == "forward":
        return _gradient_forward(adapter, seqs, target, method, baseline_id, steps, ig_method, pad_id, rows,
                                 attribute_generated, keep_ids)
    return _gradient(adapter, seqs, target, method, baseline_id, steps, ig_method, pad_id, rows,
                     attribute_generated, keep_ids)


def _gradient_chunks(jobs: list[tuple[int, int, int]], seqs: list[_Seq], target: str,
                     rows: int) -> list[list[tuple[int, int, int]]]:
    """Calls of at most ``rows`` jobs; for per-token targets every call holds rows of one decoder length (the
    row of answer token r is cut after prompt + r tokens), so no padding is run and only the last position's
    logits are needed."""
    if target == "sequence":
        return [jobs[i:i + rows] for i in range(0, len(jobs), rows)]
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for job in jobs:
        groups.setdefault(len(seqs[job[0]].prompt) + job[1], []).append(job)
    return [g[i:i + rows] for _, g in sorted(groups.items()) for i in range(0, len(g), rows)]


def _row_score(logits: torch.Tensor, cs: list[_Seq], chunk: list[tuple[int, int, int]], weights: list[torch.Tensor],
               target: str, raw: bool) -> torch.Tensor:
    """The target of each row of one call (rows,): per-token rows read the last position's logits."""
    dev = logits.device
    pos, tok, con = _targets(cs, dev)
    if target == "sequence":
        per_token = _token_scores(logits, pos, tok, con, raw)
        w = torch.zeros_like(per_token)
        for i, (b, r, _) in enumerate(chunk):
            w[i, :len(cs[i].answer)] = weights[b][r].to(w)
        return (w * per_token).sum(1)
    pick = torch.tensor([r for _, r, _ in chunk], device=dev)[:, None]
    return _token_scores(logits[:, -1:], torch.zeros_like(pick), tok.gather(1, pick),
                         None if con is None else con.gather(1, pick), raw)[:, 0]


@contextlib.contextmanager
def _encoder_span(adapter: SeqAdapter, state) -> Iterator[dict[str, int]]:
    """Where the encoder's attentions start and end in ``state.probs`` (hooks on the encoder, removed after)."""
    span = {"start": 0, "end": 0}
    if not adapter.encoder_decoder:
        yield span
        return
    enc = adapter.encoder_module()
    handles = [enc.register_forward_pre_hook(lambda m, a: span.update(start=len(state.probs))),
               enc.register_forward_hook(lambda m, a, o: span.update(end=len(state.probs)))]
    try:
        yield span
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _activation_rules(model: nn.Module) -> Iterator[None]:
    """The identity rule on Hugging Face activation modules (GPT-2's tanh GELU is written out in products)."""
    def hook(m, args, out):
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and out.shape == x.shape:
            return identity_rule(x, out, 0.5)
        return None
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if type(m).__module__.startswith("transformers.activations")]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _attention_kinds(probs: list[torch.Tensor], span: dict[str, int], encoder_decoder: bool) -> list[str]:
    """``enc`` / ``self`` / ``cross`` of each recorded attention: decoder layers run self then cross."""
    if not encoder_decoder:
        return ["self"] * len(probs)
    if span["start"] != 0:
        raise RuntimeError("attention ran before the encoder; cannot tell encoder and decoder attentions apart")
    n_dec = len(probs) - span["end"]
    if n_dec % 2:
        raise RuntimeError(f"{n_dec} decoder attentions: expected a self- and a cross-attention per layer")
    return ["enc"] * span["end"] + ["self", "cross"] * (n_dec // 2)


def _attention_based(adapter: SeqAdapter, seqs: list[_Seq], target: str, method: str, pad_id: int, rows: int,
                     attribute_generated: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Rollout, gradient rollout or AttnLRP: rows are (sequence, target row), or one per sequence for rollout.
    Also, per sequence, (rows, 2): AttnLRP's target logit and the softmax rule's share of it (empty otherwise)."""
    dev, model = adapter.device, adapter.model
    weights = [_weights(s, target) for s in seqs]
    out = [torch.zeros(w.shape[0], len(s.source) + len(s.decoder), dtype=torch.float64)
           for s, w in zip(seqs, weights)]
    kept = [torch.zeros(w.shape[0], 2, dtype=torch.float64) for w in weights]
    full = method == "rollout" or target == "sequence"
    if method == "rollout":
        jobs = [(b, 0, 0) for b in range(len(seqs))]
        chunks = [jobs[i:i + rows] for i in range(0, len(jobs), rows)]
    else:
        jobs = [(b, r, 0) for b, w in enumerate(weights) for r in range(w.shape[0])]
        chunks = _gradient_chunks(jobs, seqs, target, rows)
    for chunk in chunks:
        cs = [seqs[b] for b, _, _ in chunk]
        decs = [s.decoder if full else s.decoder[:len(s.prompt) + r] for s, (_, r, _) in zip(cs, chunk)]
        dec_ids, dec_mask = pad_rows(decs, pad_id, dev)
        src_in = src_mask = None
        with torch.no_grad():
            dec_in = adapter.embed_target(dec_ids)
            if adapter.encoder_decoder:
                src_ids, src_mask = pad_rows([s.source for s in cs], pad_id, dev)
                src_in = adapter.embed_source(src_ids).detach().requires_grad_(True)
        dec_in = dec_in.detach().requires_grad_(True)
        lrp = method == "attnlrp"
        with preserved_state(model), torch.enable_grad():
            for p in model.parameters():
                p.requires_grad_(False)
            with sequence_rules(rules=lrp, record=lrp) as state, _encoder_span(adapter, state) as span, \
                    _activation_rules(model) if lrp else contextlib.nullcontext():
                logits = adapter.logits(src_in, src_mask, dec_in, dec_mask, last_only=not full)
            probs = state.probs
            if method != "rollout":
                row_scores = _row_score(logits, cs, chunk, weights, target, raw=lrp or target == "logit")
                score = row_scores.sum()
            if lrp:
                leaves = [dec_in] + ([src_in] if src_in is not None else [])
                recorded = [t for pair in state.softmax for t in pair]
                grads = torch.autograd.grad(score, leaves + recorded, allow_unused=True)
                rel_dec = (grads[0] * dec_in).sum(-1).detach()
                rel_src = (grads[1] * src_in).sum(-1).detach() * src_mask if src_in is not None else None
                share = torch.zeros(len(chunk), dtype=torch.float64, device=dev)
                g_rec = grads[len(leaves):]
                for j, (lg, pr) in enumerate(state.softmax):
                    gl, gp = g_rec[2 * j], g_rec[2 * j + 1]
                    if gl is None or gp is None:
                        continue
                    lg = torch.where(torch.isfinite(lg), lg, torch.zeros_like(lg))
                    share += ((pr * gp).flatten(1).sum(1) - (lg * gl).flatten(1).sum(1)).detach().double()
            else:
                kinds = _attention_kinds(probs, span, adapter.encoder_decoder)
                if method == "rollout":
                    layers = [(k, a.detach().mean(1)) for k, a in zip(kinds, probs)]
                    r_qs, r_qq = seq_rollout(layers)
                else:
                    g = torch.autograd.grad(score, probs, allow_unused=True)
                    layers = [(k, gradient_heads(a.detach(), torch.zeros_like(a) if gi is None else gi))
                              for k, a, gi in zip(kinds, probs, g)]
                    r_qs, r_qq = seq_gradient_rollout(layers)
                rel_src, rel_dec = r_qs.detach(), r_qq.detach()
        for i, (b, r, _) in enumerate(chunk):
            s = seqs[b]
            ns, p = len(s.source), len(s.prompt)
            nd = len(decs[i])
            n_scope = p + (len(s.answer) if attribute_generated else 0)
            row_ids = range(weights[b].shape[0]) if method == "rollout" else [r]
            for rr in row_ids:
                if lrp:
                    kept[b][rr, 0] = float(row_scores[i].detach())
                    kept[b][rr, 1] = float(share[i])
                    src_row = rel_src[i] if rel_src is not None else None
                    dec_row = rel_dec[i]
                else:
                    at = [p - 1 + k for k in range(len(s.answer))] if target == "sequence" else [p - 1 + rr]
                    if not full:
                        at = [nd - 1]
                    src_row = rel_src[i, at].sum(0) if ns else None
                    dec_row = rel_dec[i, at].sum(0)
                if ns:
                    out[b][rr, :ns] = src_row[:ns].double().cpu()
                keep = min(nd, n_scope)
                out[b][rr, ns:ns + keep] = dec_row[:keep].double().cpu()
    return [o.to(_out_dtype(adapter)) for o in out], kept


def _out_dtype(adapter: SeqAdapter) -> torch.dtype:
    return torch.float64 if next(adapter.model.parameters()).dtype == torch.float64 else torch.float32


def _targets(cs: list[_Seq], dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Logit positions, target tokens and contrast tokens (rows, Nmax) of unablated sequences."""
    n = max(len(s.answer) for s in cs)
    pos = torch.zeros(len(cs), n, dtype=torch.long)
    tok = torch.zeros(len(cs), n, dtype=torch.long)
    con = None if cs[0].contrast is None else torch.zeros(len(cs), n, dtype=torch.long)
    for i, s in enumerate(cs):
        p, a = len(s.prompt), len(s.answer)
        pos[i, :a] = torch.arange(p - 1, p - 1 + a)
        tok[i, :a] = torch.tensor(s.answer)
        if con is not None:
            con[i, :a] = torch.tensor(s.contrast)
    return pos.to(dev), tok.to(dev), None if con is None else con.to(dev)


def _ablation_scores(adapter: SeqAdapter, seqs: list[_Seq], jobs: list[tuple[int, int | None]], ablation: str,
                     baseline_id: int, pad_id: int, rows: int, raw: bool = False) -> list[torch.Tensor]:
    """Per-token scores (N,) of each job (sequence, ablated column or None); a target left with no context
    is scored NaN."""
    dev = adapter.device
    out: list[torch.Tensor] = []
    for start in range(0, len(jobs), rows):
        chunk = jobs[start:start + rows]
        srcs, decs, poss = [], [], []
        for b, col in chunk:
            s = seqs[b]
            src, dec = list(s.source), list(s.decoder)
            ns, p = len(src), len(s.prompt)
            pos = list(range(p - 1, p - 1 + len(s.answer)))
            if col is not None:
                if col < ns:
                    if ablation == "baseline":
                        src[col] = baseline_id
                    else:
                        del src[col]
                else:
                    j = col - ns
                    if ablation == "baseline":
                        dec[j] = baseline_id
                    else:
                        del dec[j]
                        pos = [q - 1 if j <= q else q for q in pos]
            srcs.append(src)
            decs.append(dec)
            poss.append(pos)
        dec_ids, dec_mask = pad_rows(decs, pad_id, dev)
        src_e = src_mask = None
        if adapter.encoder_decoder:
            src_ids, src_mask = pad_rows(srcs, pad_id, dev)
            src_e = adapter.embed_source(src_ids)
        logits = adapter.logits(src_e, src_mask, adapter.embed_target(dec_ids), dec_mask)
        cs = [seqs[b] for b, _ in chunk]
        _, tok, con = _targets(cs, dev)
        n = tok.shape[1]
        pos = torch.zeros(len(chunk), n, dtype=torch.long)
        for i, q in enumerate(poss):
            pos[i, :len(q)] = torch.tensor(q)
        pos = pos.to(dev)
        s = _token_scores(logits, pos, tok, con, raw)
        s = torch.where(pos < 0, torch.full_like(s, float("nan")), s)
        for i, (b, _) in enumerate(chunk):
            out.append(s[i, :len(seqs[b].answer)])
    return out


def _ablation(adapter: SeqAdapter, seqs: list[_Seq], clean: list[torch.Tensor], target: str, ablation: str,
              baseline_id: int, pad_id: int, rows: int, attribute_generated: bool,
              keep_ids: frozenset[int] = frozenset()) -> list[torch.Tensor]:
    """score(original) - score(ablated column) for every in-scope column whose token the baseline does not keep
    (kept columns stay 0); rows are (sequence, column)."""
    kept = [set(_kept_columns(s, keep_ids, attribute_generated)) for s in seqs]
    jobs = [(b, c) for b, s in enumerate(seqs) for c in _in_scope(s, attribute_generated) if c not in kept[b]]
    if ablation == "remove":
        for b, c in jobs:
            s = seqs[b]
            if c < len(s.source) and len(s.source) == 1:
                raise ValueError("removing the only source token leaves an empty source; use ablation='baseline'")
    with torch.no_grad():
        scores = _ablation_scores(adapter, seqs, jobs, ablation, baseline_id, pad_id, rows, raw=target == "logit")
    dtype = _out_dtype(adapter)
    out = [torch.zeros(_weights(s, target).shape[0], len(s.source) + len(s.decoder), dtype=dtype) for s in seqs]
    for (b, c), sc in zip(jobs, scores):
        w = _weights(seqs[b], target).to(device=sc.device, dtype=sc.dtype)
        diff = clean[b] - sc
        diff = torch.nan_to_num(diff, nan=0.0)  # a target left without context keeps its score
        out[b][:, c] = (w @ diff).detach().cpu().to(dtype)
    return out


def generate(model: nn.Module, prompts: Sequence[Sequence[int]], *, sources: Sequence[Sequence[int]] | None = None,
             max_new_tokens: int = 20, eos_id: int | None = None, pad_id: int = 0) -> list[list[int]]:
    """Greedy continuations (token ids, without the end token) of each prompt, batched, by full forwards."""
    adapter = SeqAdapter(model)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    prompts = [_ids(p, "each prompt") for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("give one or more prompts of at least one token")
    if adapter.encoder_decoder:
        if sources is None or len(sources) != len(prompts):
            raise ValueError("an encoder-decoder model needs one source per prompt")
        sources = [_ids(s, "each source") for s in sources]
    dev = adapter.device
    answers: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            src_e = src_mask = None
            if adapter.encoder_decoder:
                src_ids, src_mask = pad_rows(sources, pad_id, dev)
                src_e = adapter.embed_source(src_ids)
            for _ in range(max_new_tokens):
                decs = [p + a for p, a in zip(prompts, answers)]
                ids, mask = pad_rows(decs, pad_id, dev)
                logits = adapter.logits(src_e, src_mask, adapter.embed_target(ids), mask)
                last = torch.tensor([len(d) - 1 for d in decs], device=dev)
                nxt = logits[torch.arange(len(decs), device=dev), last].argmax(-1).tolist()
                for i, t in enumerate(nxt):
                    if done[i]:
                        continue
                    if eos_id is not None and t == eos_id:
                        done[i] = True
                    else:
                        answers[i].append(int(t))
                if all(done):
                    break
    finally:
        model.train(was_training)
    return answers


def generation_results(attr: GenerationAttribution, tokens: Sequence[str], *, model: str = "model",
                       text: str = "", baseline_token: str | None = None) -> dict:
    """JSON-ready results of one sequence: ``input_tokens`` (source + prompt), ``output_tokens``, per method
    the (rows x columns) ``matrix`` whose columns are the input tokens then the output tokens, and the
    ``settings`` (baseline token, which columns it kept, IG steps, ablation)."""
    tokens = list(tokens)
    if len(tokens) != len(attr.column_ids):
        raise ValueError(f"give one token string per column ({len(attr.column_ids)}), got {len(tokens)}")
    n_in = attr.n_inputs
    rows = ["<answer>"] if attr.target == "sequence" else tokens[n_in:]
    st = attr.settings
    settings = {"baseline_id": st.get("baseline_id"), "baseline_token": baseline_token,
                "special_tokens": st.get("special_tokens"), "kept_columns": list(attr.kept_columns),
                "kept_tokens": [tokens[j] for j in attr.kept_columns], "ig_steps": st.get("steps"),
                "ig_method": st.get("ig_method"), "ablation": st.get("ablation"),
                "attribute_generated": st.get("attribute_generated")}
    return {"model": model, "text": text, "target": attr.target, "settings": settings,
            "input_tokens": tokens[:n_in],
            "output_tokens": tokens[n_in:], "n_source": len(attr.source_ids), "row_tokens": rows,
            "scores": [float(v) for v in attr.scores], "logprobs": [float(v) for v in attr.logprobs],
            "methods": {m: {"matrix": [[float(v) for v in row] for row in mat], **(
                {"target_logit": [float(v) for v in attr.lrp_target],
                 "softmax_share": [float(v) for v in attr.lrp_softmax_share]}
                if m == "attnlrp" and attr.lrp_target is not None else {})}
                        for m, mat in attr.matrices.items()}}
