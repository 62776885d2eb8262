"""Rollout, gradient rollout (Chefer et al. 2021b) and AttnLRP (Achtibat et al. 2024) per generated token:
against references computed from attentions captured by hooks (an independent path), the image rollout
functions on decoder-only models, and AttnLRP's conservation on bias-free LLaMA / GPT-2 models."""
from __future__ import annotations

import pytest
import torch

from interpretorch.transformers.attention import capture_attention
from interpretorch.transformers.generation import attribute_generation
from interpretorch.transformers.lrp import sequence_rules
from interpretorch.transformers.rollout import gradient_rollout_matrix, rollout_matrix
from interpretorch.transformers.seq_models import CopyTransformer, TranslationTransformer

V = 30


def translation(seed: int = 0) -> TranslationTransformer:
    torch.manual_seed(seed)
    return TranslationTransformer(V, dim=16, layers=2, heads=2, ffn=32, max_len=12).eval().double()


def copy_model(seed: int = 0) -> CopyTransformer:
    torch.manual_seed(seed)
    return CopyTransformer(V, dim=16, layers=2, heads=2, ffn=32, max_len=16).eval().double()


def _kind(name: str) -> str:
    return "enc" if ".encoder." in name else ("cross" if "multihead_attn" in name else "self")


def _eye(n: int) -> torch.Tensor:
    return torch.eye(n, dtype=torch.float64)


def _norm_rows(a: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(a / a.sum(-1, keepdim=True), nan=0.0)


def reference_rollout(model, src, dec):
    """Rollout of one sentence from hook-captured attentions, written out per layer (2-D matrices)."""
    with capture_attention(model) as rec, torch.no_grad():
        model(torch.tensor([src]), torch.tensor([dec]))
        maps = [(_kind(n), rec[n][0].mean(0)) for n in rec.order]
    s, t = len(src), len(dec)
    r_ss, r_d = _eye(s), torch.cat([torch.zeros(t, s, dtype=torch.float64), _eye(t)], 1)
    for kind, a in maps:
        if kind == "enc":
            r_ss = _norm_rows(0.5 * a + 0.5 * _eye(s)) @ r_ss
        elif kind == "self":
            r_d = _norm_rows(0.5 * a + 0.5 * _eye(t)) @ r_d
        else:
            r_d = 0.5 * r_d + 0.5 * a @ torch.cat([r_ss, torch.zeros(s, t, dtype=torch.float64)], 1)
    return r_d


def handle_residual(r: torch.Tensor) -> torch.Tensor:
    """Chefer et al.'s normalisation of a self-attention relevance map (their ``handle_residual``)."""
    eye = _eye(r.shape[-1])
    return _norm_rows(r - eye) + eye


def reference_gradient_rollout(model, src, dec, token):
    """Chefer et al. 2021b's rules for one target (log p(token) after ``dec``), as in the authors' code."""
    with capture_attention(model, grad=True) as rec:
        logits = model(torch.tensor([src]), torch.tensor([dec]))
        score = torch.log_softmax(logits[0, -1], -1)[token]
        probs = [rec[n] for n in rec.order]
        grads = torch.autograd.grad(score, probs)
        cams = [(_kind(n), (g * a).clamp(min=0).mean(1)[0]) for n, a, g in zip(rec.order, probs, grads)]
    s, t = len(src), len(dec)
    r_ss, r_qq, r_qs = _eye(s), _eye(t), torch.zeros(t, s, dtype=torch.float64)
    for kind, cam in cams:
        if kind == "enc":
            r_ss = r_ss + cam @ r_ss
        elif kind == "self":
            r_qs, r_qq = r_qs + cam @ r_qs, r_qq + cam @ r_qq
        else:
            r_qs = r_qs + handle_residual(r_qq).t() @ cam @ handle_residual(r_ss)
    return torch.cat([r_qs[-1], r_qq[-1]])


@pytest.mark.numerics
def test_encoder_decoder_rollouts_match_hook_references():
    model = translation()
    sources, prompts, answers = [[5, 6, 7, 8, 9], [10, 11, 12]], [[1], [1]], [[20, 21, 22], [23, 24]]
    res = attribute_generation(model, prompts, answers, sources=sources, methods=["rollout", "gradient_rollout"],
                               batch_size=3)
    for r, s, p, a in zip(res, sources, prompts, answers):
        dec = p + a
        roll = reference_rollout(model, s, dec)
        for i in range(len(a)):
            want = roll[len(p) - 1 + i].clone()
            want[len(s) + len(p) + i:] = 0  # answer columns from token i on are not in row i
            torch.testing.assert_close(r.matrices["rollout"][i], want, rtol=1e-9, atol=1e-12)
            grad = reference_gradient_rollout(model, s, dec[:len(p) + i], a[i])
            torch.testing.assert_close(r.matrices["gradient_rollout"][i, :len(grad)], grad, rtol=1e-8, atol=1e-10)
            assert torch.all(r.matrices["gradient_rollout"][i, len(grad):] == 0)
        # every rollout row is a distribution over the columns it may read
        torch.testing.assert_close(r.matrices["rollout"].sum(1), torch.ones(len(a), dtype=torch.float64))
        assert r.matrices["gradient_rollout"][:, :len(s)].abs().sum() > 0


@pytest.mark.numerics
def test_decoder_only_rollouts_equal_the_image_rollout_functions():
    """Without cross-attention the rules reduce to rollout (Abnar) and Chefer's self-attention rule."""
    model = copy_model()
    prompt, answer = [1, 5, 6, 7, 3], [5, 6, 7]
    r = attribute_generation(model, [prompt], [answer], methods=["rollout", "gradient_rollout"])[0]
    ids = torch.tensor([prompt + answer])
    with capture_attention(model) as rec, torch.no_grad():
        model(ids)
        attn = rec.stacked()
    full = rollout_matrix(attn, residual=True)[0]
    for i, tok in enumerate(answer):
        n = len(prompt) + i
        want = full[n - 1].clone()
        want[n:] = 0
        torch.testing.assert_close(r.matrices["rollout"][i], want, rtol=1e-9, atol=1e-12)
        with capture_attention(model, grad=True) as rec:
            score = torch.log_softmax(model(ids[:, :n])[0, -1], -1)[tok]
            grads = rec.gradients(score)
            g_attn = rec.stacked()
        want = gradient_rollout_matrix(g_attn, grads)[0, -1]
        torch.testing.assert_close(r.matrices["gradient_rollout"][i, :n], want, rtol=1e-8, atol=1e-10)


def test_multihead_attention_decomposition_keeps_values_and_gradients():
    model = translation(1)
    src = model.embed_source(torch.tensor([[5, 6, 7, 0]])).detach().requires_grad_(True)
    tgt = model.embed_target(torch.tensor([[1, 20, 21]])).detach().requires_grad_(True)
    masks = torch.tensor([[1, 1, 1, 0]]), torch.ones(1, 3, dtype=torch.long)
    plain = model.forward_embeds(src, masks[0], tgt, masks[1])
    g_plain = torch.autograd.grad(plain[0, -1, 4], [src, tgt])
    with sequence_rules(rules=False) as state:
        out = model.forward_embeds(src, masks[0], tgt, masks[1])
    assert state.counts["mha"] == 6 and len(state.probs) == 6  # 2 encoder + 2 x (self, cross)
    torch.testing.assert_close(out, plain, rtol=1e-10, atol=1e-12)
    for g, h in zip(torch.autograd.grad(out[0, -1, 4], [src, tgt]), g_plain):
        torch.testing.assert_close(g, h, rtol=1e-9, atol=1e-12)
    assert state.probs[2].shape == (1, 2, 3, 3) and state.probs[3].shape == (1, 2, 3, 4)


def _zero_biases(model, names=("bias", "wpe")):
    with torch.no_grad():
        for n, p in model.named_parameters():
            if any(k in n for k in names):
                p.zero_()
    return model


@pytest.mark.numerics
def test_attnlrp_conserves_the_logit_on_bias_free_decoders():
    """Achtibat et al.: with the identity rule on RMSNorm / LayerNorm and GELU / SiLU, the uniform rule on
    Q K^T, A V and the gated MLP product, and no biases or position embeddings, the relevance of the input
    embeddings plus the softmax rule's bias term is the explained logit."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                   attn_implementation="sdpa")
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(cfg).eval().double()
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                                  attn_implementation="sdpa")
    gpt2 = _zero_biases(transformers.GPT2LMHeadModel(cfg).eval().double())
    prompts, answers = [[5, 6, 7, 8], [9, 3]], [[10, 11, 12], [13, 14, 15, 16]]
    for model in (llama, gpt2):
        res = attribute_generation(model, prompts, answers, methods=["attnlrp"], batch_size=3)
        for r, p, a in zip(res, prompts, answers):
            m = r.matrices["attnlrp"]
            for i, tok in enumerate(a):
                with torch.no_grad():
                    logit = model(input_ids=torch.tensor([p + a[:i]])).logits[0, -1, tok].item()
                assert r.lrp_target[i].item() == pytest.approx(logit, rel=1e-9)
                total = m[i].sum().item() + r.lrp_softmax_share[i].item()
                # LLaMA's RMSNorm computes in float32: conservation holds to float32 rounding
                assert total == pytest.approx(logit, rel=1e-5, abs=1e-6), (type(model).__name__, i)
                assert torch.all(m[i, len(p) + i:] == 0)
    # with biases the conservation is broken by what the biases keep: the test above can fail
    biased = transformers.GPT2LMHeadModel(cfg).eval().double()
    r = attribute_generation(biased, prompts[:1], answers[:1], methods=["attnlrp"])[0]
    gap = (r.matrices["attnlrp"].sum(1) + r.lrp_softmax_share - r.lrp_target).abs().max().item()
    assert gap > 1e-3


def test_attnlrp_contrastive_is_the_difference_of_two_rows_and_model_is_unchanged():
    model = copy_model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    prompt = [1, 5, 6, 3]
    con = attribute_generation(model, [prompt], [[7]], methods=["attnlrp"], target="contrastive",
                               contrasts=[[8]])[0].matrices["attnlrp"][0]
    a = attribute_generation(model, [prompt], [[7]], methods=["attnlrp"])[0]
    b = attribute_generation(model, [prompt], [[8]], methods=["attnlrp"])[0]
    torch.testing.assert_close(con, a.matrices["attnlrp"][0] - b.matrices["attnlrp"][0], rtol=1e-9, atol=1e-12)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_encoder_decoder_without_get_encoder_is_refused():
    class NoEncoder(TranslationTransformer):
        get_encoder = None

    torch.manual_seed(0)
    model = NoEncoder(V, dim=16, layers=1, heads=2, ffn=32).eval()
    with pytest.raises(TypeError, match="get_encoder"):
        attribute_generation(model, [[1]], [[20]], sources=[[5, 6]], methods=["rollout"])
    # the gradient methods do not need it
    attribute_generation(model, [[1]], [[20]], sources=[[5, 6]], methods=["input_x_gradient"])


def test_methods_command_lists_the_generation_methods(capsys):
    from interpretorch.cli import main
    from interpretorch.transformers.generation import GENERATION_METHODS, METHOD_DOCS

    assert tuple(METHOD_DOCS) == GENERATION_METHODS
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    section = text[text.index("explain-generation --methods"):]
    assert all(f"\n{m} " in section for m in GENERATION_METHODS)


@pytest.mark.numerics
def test_eager_and_fused_attention_give_the_same_attention_methods():
    """Eager attention (matmul, softmax) and SDPA (decomposed by the rules) are two code paths to one result."""
    transformers = pytest.importorskip("transformers")
    made = []
    for impl in ("eager", "sdpa"):
        cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32,
                                       attn_implementation=impl)
        torch.manual_seed(3)
        made.append(transformers.LlamaForCausalLM(cfg).eval().double())
    prompts, answers = [[5, 6, 7], [9, 3, 4, 2]], [[10, 11], [13, 14, 15]]
    methods = ["rollout", "gradient_rollout", "attnlrp"]
    eager, sdpa = (attribute_generation(m, prompts, answers, methods=methods, batch_size=2) for m in made)
    for a, b in zip(eager, sdpa):
        for m in methods:
            torch.testing.assert_close(a.matrices[m], b.matrices[m], rtol=1e-6, atol=1e-8)


def test_hugging_face_encoder_decoders_record_every_attention():
    """T5 (eager softmax, relative position bias) and BART (SDPA): encoder, self- and cross-attentions are all
    found (a wrong split fails the shape checks), rollout rows are distributions, rows are causal."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=V, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, decoder_start_token_id=0,
        pad_token_id=0)).eval().double()
    bart = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=V, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32)).eval().double()
    sources, prompts, answers = [[5, 6, 7, 2], [8, 9, 2]], [[0], [0]], [[11, 12], [13, 14, 15]]
    for model in (t5, bart):
        res = attribute_generation(model, prompts, answers, sources=sources,
                                   methods=["rollout", "gradient_rollout", "attnlrp"])
        for r, s, a in zip(res, sources, answers):
            torch.testing.assert_close(r.matrices["rollout"].sum(1), torch.ones(len(a), dtype=torch.float64))
            for m in ("rollout", "gradient_rollout", "attnlrp"):
                mat = r.matrices[m]
                assert mat.shape == (len(a), len(s) + 1 + len(a)) and mat[:, :len(s)].abs().sum() > 0
                for i in range(len(a)):
                    assert torch.all(mat[i, len(s) + 1 + i:] == 0)
