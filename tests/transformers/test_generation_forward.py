"""Forward-mode gradient attribution of generated tokens (one tangent pass per attributed column gives every
target row) equals the reverse-mode path (one backward per target row) on padded batches of decoder-only and
encoder-decoder models, with and without the answer tokens on the path."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
from interpretorch.transformers.generation import attribute_generation  # noqa: E402
from interpretorch.transformers.seq_models import load_seq_model, make_examples  # noqa: E402

from test_generation import bart, gpt2, llama, t5  # noqa: E402


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def both_modes(model, prompts, answers, sources, method, generated, tol, **kw):
    """Forward and reverse mode give one matrix per sequence within ``tol`` (relative to the largest entry)."""
    args = dict(sources=sources, methods=[method], attribute_generated=generated, **kw)
    fwd = attribute_generation(model, prompts, answers, gradient_mode="forward", **args)
    rev = attribute_generation(model, prompts, answers, gradient_mode="reverse", **args)
    for f, r in zip(fwd, rev):
        assert f.matrices[method].shape == r.matrices[method].shape
        assert r.matrices[method].abs().max() > 0
        assert rel_diff(f.matrices[method], r.matrices[method]) <= tol
    return fwd, rev


@pytest.mark.numerics
@pytest.mark.parametrize("make", [gpt2, llama, t5, bart])
@pytest.mark.parametrize("method", ["input_x_gradient", "integrated_gradients"])
@pytest.mark.parametrize("generated", [True, False])
def test_forward_mode_equals_reverse_mode(make, method, generated):
    model = make()
    if make in (t5, bart):
        sources, prompts = [[5, 6, 7, 2], [8, 9, 2]], [[0], [0]]
    else:
        sources, prompts = None, [[5, 6, 7, 8], [9, 3]]
    answers = [[10, 11, 12], [13, 14, 15, 16]]
    # float64 models; LLaMA's RMSNorm and T5's layer norm take the variance in float32: 1e-6 relative
    fwd, _ = both_modes(model, prompts, answers, sources, method, generated, 1e-6, steps=8, batch_size=5)
    for f, s in zip(fwd, sources or [[]] * 2):
        m = f.matrices[method]
        n_in = len(s) + (len(f.prompt_ids))
        for i in range(len(f.answer_ids)):  # causality: nothing on answer columns >= i, and none when fixed
            assert torch.all(m[i, n_in + (i if generated else 0):] == 0)
    assert torch.backends.mha.get_fastpath_enabled()


@pytest.mark.numerics
def test_forward_mode_on_shipped_nn_transformer():
    # nn.TransformerEncoderLayer's fused inference path has no forward-mode derivative: it is switched off
    sm = load_seq_model("translation")
    ex = make_examples("translation", 3, seed=3)
    both_modes(sm.model, [e[1] for e in ex], [e[2] for e in ex], [e[0] for e in ex], "integrated_gradients",
               False, 2e-5, steps=8, batch_size=16)  # float32 model
    assert torch.backends.mha.get_fastpath_enabled()


def test_auto_mode_and_errors():
    model = gpt2()
    prompts, answers = [[5, 6]], [[10, 11, 12, 13, 14, 15]]
    auto = attribute_generation(model, prompts, answers, methods=["integrated_gradients"], steps=4,
                                attribute_generated=False)[0].matrices["integrated_gradients"]
    rev = attribute_generation(model, prompts, answers, methods=["integrated_gradients"], steps=4,
                               attribute_generated=False,
                               gradient_mode="reverse")[0].matrices["integrated_gradients"]
    assert rel_diff(auto, rev) <= 1e-9
    with pytest.raises(ValueError, match="gradient_mode"):
        attribute_generation(model, prompts, answers, methods=["input_x_gradient"], gradient_mode="backward")
    with pytest.raises(ValueError, match="per-token"):
        attribute_generation(model, prompts, answers, methods=["input_x_gradient"], target="sequence",
                             gradient_mode="forward")


@pytest.mark.numerics
@pytest.mark.parametrize("make", [gpt2, t5])
def test_forward_mode_contrastive_target(make):
    # the score's gradient at the LM head's input is taken for log p(A) - log p(B) at each position
    model = make()
    ed = make is t5
    both_modes(model, [[0], [0]] if ed else [[5, 6, 7], [9, 3]], [[10, 11, 12], [13, 14]],
               [[5, 6, 2], [8, 9, 7, 2]] if ed else None, "integrated_gradients", True, 1e-6, steps=4,
               target="contrastive", contrasts=[[20, 21, 22], [23, 24]], batch_size=4)
