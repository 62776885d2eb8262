"""The baseline of Integrated Gradients and ablation with the special tokens kept (``special_tokens="keep"``) or
replaced (``"replace"``): completeness against the score of the baseline sequence built by hand, the special
columns exactly 0, forward- and reverse-mode equality, Captum's ``skip_tokens`` parity, and the page's settings."""
from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from interpretorch.cli import main  # noqa: E402
from interpretorch.transformers.generation import attribute_generation, model_special_ids  # noqa: E402
from interpretorch.transformers.seq_models import SPECIAL_IDS, load_seq_model  # noqa: E402

from test_generation import gpt2, reference_logprobs, t5, word_tokenizer  # noqa: E402


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_keep_changes_only_the_special_columns_baseline(mode):
    # GPT-2 config: bos = eos = 0 (its special id); baseline id 1. With every token on the path, IG row i sums to
    # score(actual) - score(baseline sequence): all 1s under 'replace', 0 kept at its place under 'keep'
    model = gpt2()
    assert model_special_ids(model) == [0]
    prompt, answer = [0, 5, 6, 0, 7], [10, 11, 12]
    res = {sp: attribute_generation(model, [prompt], [answer], methods=["integrated_gradients", "ablation"],
                                    steps=64, baseline_id=1, special_tokens=sp, gradient_mode=mode)[0]
           for sp in ("keep", "replace")}
    lp = reference_logprobs(model, prompt, answer)
    for sp, r in res.items():
        ig = r.matrices["integrated_gradients"]
        for i in range(len(answer)):
            base = [t if sp == "keep" and t == 0 else 1 for t in prompt + answer[:i]]
            lp0 = reference_logprobs(model, base[:len(prompt)], base[len(prompt):] + [answer[i]])[-1]
            assert ig[i].sum().item() == pytest.approx(lp[i].item() - lp0.item(), abs=1e-6), (sp, i)
    keep, repl = res["keep"], res["replace"]
    assert keep.kept_columns == [0, 3] and repl.kept_columns == []
    assert keep.settings["special_ids"] == [0] and repl.settings["special_ids"] == []
    for m in ("integrated_gradients", "ablation"):
        assert torch.all(keep.matrices[m][:, [0, 3]] == 0)
        assert repl.matrices[m][:, [0, 3]].abs().max() > 1e-4
    # ablation perturbs one column at a time: the option only decides whether the special columns are ablated
    torch.testing.assert_close(keep.matrices["ablation"][:, [1, 2, 4]], repl.matrices["ablation"][:, [1, 2, 4]])
    torch.testing.assert_close(repl.matrices["ablation"][:, 3], lp - reference_logprobs(model, [0, 5, 6, 1, 7],
                                                                                          answer))
    # IG moves the non-special columns too (their path runs beside a different baseline at columns 0 and 3)
    assert rel_diff(keep.matrices["integrated_gradients"][:, [1, 2, 4]],
                    repl.matrices["integrated_gradients"][:, [1, 2, 4]]) > 1e-5
    # gradient x input has no baseline token: the option does not touch it
    gx = {sp: attribute_generation(model, [prompt], [answer], methods=["input_x_gradient"], special_tokens=sp,
                                   gradient_mode=mode)[0].matrices["input_x_gradient"] for sp in ("keep", "replace")}
    assert torch.equal(gx["keep"], gx["replace"])


@pytest.mark.numerics
@pytest.mark.parametrize("make", [gpt2, t5])
def test_keep_forward_mode_equals_reverse_mode(make):
    model = make()
    ed = make is t5
    sources = [[5, 6, 7, 1], [8, 1, 9, 1]] if ed else None  # T5: pad = decoder start = 0, eos = 1
    prompts = [[0], [0]] if ed else [[0, 5, 6, 7], [9, 0, 3]]
    answers = [[10, 11, 12], [13, 14, 1, 16]]
    kw = dict(sources=sources, methods=["integrated_gradients"], steps=8, baseline_id=3, special_tokens="keep",
              batch_size=5)
    fwd = attribute_generation(model, prompts, answers, gradient_mode="forward", **kw)
    rev = attribute_generation(model, prompts, answers, gradient_mode="reverse", **kw)
    for f, r in zip(fwd, rev):
        mf, mr = f.matrices["integrated_gradients"], r.matrices["integrated_gradients"]
        assert f.kept_columns == r.kept_columns and f.kept_columns
        assert torch.all(mf[:, f.kept_columns] == 0) and torch.all(mr[:, r.kept_columns] == 0)
        assert rel_diff(mf, mr) <= 1e-6


@pytest.mark.numerics
def test_keep_equals_captum_skip_tokens():
    # Captum's TextTokenInput(skip_tokens=...) leaves the skipped tokens unperturbed: the same baseline as 'keep'
    attr = pytest.importorskip("captum.attr")
    model, tok = gpt2(), word_tokenizer()
    prompt, answer = [0, 5, 6, 0, 7], [10, 11, 12, 13]
    inp = attr.TextTokenInput(" ".join(f"w{i}" for i in prompt), tok, baselines=3, skip_tokens=[0])
    assert inp.inp_tensor[0].tolist() == prompt
    ours = attribute_generation(model, [prompt], [answer], methods=["integrated_gradients", "ablation"], steps=16,
                                baseline_id=3, special_ids=[0], attribute_generated=False, batch_size=7)[0]
    free = [1, 2, 4]
    lig = attr.LayerIntegratedGradients(model, model.transformer.wte)
    ig = attr.LLMGradientAttribution(lig, tok).attribute(inp, target=torch.tensor(answer), n_steps=16)
    assert ig.token_attr.shape == (4, 3)
    assert rel_diff(ours.matrices["integrated_gradients"][:, free], ig.token_attr.double()) <= 1e-5
    fa = attr.LLMAttribution(attr.FeatureAblation(model), tok).attribute(inp, target=torch.tensor(answer),
                                                                         use_cached_outputs=False)
    assert rel_diff(ours.matrices["ablation"][:, free], fa.token_attr.double()) <= 1e-5
    for m in ("integrated_gradients", "ablation"):
        assert torch.all(ours.matrices[m][:, [0, 3]] == 0) and torch.all(ours.matrices[m][:, 5:] == 0)


def test_special_ids_of_models_and_errors():
    assert model_special_ids(load_seq_model("copy").model) == list(SPECIAL_IDS) == [0, 1, 2, 3]
    assert model_special_ids(t5()) == [0, 1]
    with pytest.raises(ValueError, match="special_tokens"):
        attribute_generation(gpt2(), [[1]], [[2]], special_tokens="skip")
    with pytest.raises(ValueError, match="special_ids"):
        attribute_generation(gpt2(), [[1]], [[2]], special_ids="bos")


def test_page_states_the_baseline(tmp_path):
    out = tmp_path / "keep"
    assert main(["explain-generation", "the big cat sees a dog", "--model", "copy", "--target", "the big",
                 "--methods", "ig,ablation", "--ig-steps", "2", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    st = r["settings"]
    assert st["special_tokens"] == "keep" and st["baseline_token"] == "<pad>" and st["ig_steps"] == 2
    assert st["kept_tokens"] == ["<bos>", "<sep>"] and st["kept_columns"] == [0, 7]
    for m in ("integrated_gradients", "ablation"):
        assert all(row[0] == 0 and row[7] == 0 for row in r["methods"][m]["matrix"])
    html = (out / "index.html").read_text()
    assert "Baseline: &#39;&lt;pad&gt;&#39; at every attributed column" in html
    assert "their columns are exactly 0 under integrated_gradients and ablation" in html
    rep = tmp_path / "replace"
    assert main(["explain-generation", "the big cat sees a dog", "--model", "copy", "--target", "the big",
                 "--methods", "ig", "--ig-steps", "2", "--special-tokens", "replace", "--out", str(rep)]) == 0
    r2 = json.loads((rep / "results.json").read_text())
    assert r2["settings"]["kept_columns"] == [] and r2["settings"]["special_tokens"] == "replace"
    assert any(row[0] != 0 for row in r2["methods"]["integrated_gradients"]["matrix"])
    assert "special tokens included (--special-tokens replace)" in (rep / "index.html").read_text()
