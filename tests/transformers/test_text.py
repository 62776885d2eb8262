"""Token attributions for BERT-style encoders: word merging, the offline MiniLM, the explain-text command."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

pytest.importorskip("transformers")
from interpretorch.transformers.text import (encode, explain_similarity, load_minilm, merge_words,  # noqa: E402
                                             sentence_embeddings)

FIRST, SECOND = "A man is playing a guitar.", "Someone plays an instrument."


@pytest.fixture(scope="session")
def minilm():
    return load_minilm()


def test_word_pieces_merge_into_words(minilm):
    enc = encode(minilm.tokenizer, ["Tokenization is unbelievable.", "Hi"])
    assert enc.input_ids.shape[0] == 2 and enc.attention_mask[1].sum() < enc.attention_mask[0].sum()
    scores = torch.arange(enc.input_ids.shape[1], dtype=torch.float32).expand(2, -1)
    merged = merge_words(enc, scores)
    words, vals = merged[0]
    assert words == ["Tokenization", "is", "unbelievable", "."]
    # each word's score is the sum of its pieces' positions
    expect = [0.0] * 4
    for j, w in enumerate(enc.word_ids[0]):
        if w is not None:
            expect[w] += j
    assert vals == expect and len(enc.pieces[0]) > 6  # split into pieces
    assert merged[1][0] == ["Hi"]


def test_minilm_similarity_matches_sentence_transformers(minilm, snapshot):
    st = pytest.importorskip("sentence_transformers")
    from interpretorch.transformers.text import minilm_path

    ref = st.SentenceTransformer(str(minilm_path()), device="cpu")
    e = ref.encode([FIRST, SECOND], convert_to_tensor=True, normalize_embeddings=True)
    ours = sentence_embeddings(minilm, [FIRST, SECOND])
    assert torch.allclose(ours, e.cpu(), atol=1e-5)
    snap = snapshot(minilm.model)
    r = explain_similarity(minilm, FIRST, SECOND, ["rollout", "gradient_rollout", "attnlrp"])
    snap.assert_unchanged()
    assert abs(r["similarity"] - float(e[0] @ e[1])) < 1e-5
    lrp = r["sentences"][0]["methods"]["attnlrp"]
    assert lrp["tokens"] == ["A", "man", "is", "playing", "a", "guitar", "."]
    top = sorted(zip(lrp["tokens"], lrp["scores"]), key=lambda p: -p[1])[0][0]
    assert top in ("guitar", "playing")  # the content words carry the similarity
    roll = r["sentences"][1]["methods"]["rollout"]
    assert len(roll["scores"]) == len(roll["tokens"]) == 5


def _command():
    from interpretorch.cli import explain_text

    return explain_text


def test_explain_text_command(tmp_path, minilm):
    cmd = _command()
    assert cmd.NAME == "explain-text"
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    args = parser.parse_args([FIRST, SECOND, "--methods", "rollout,attnlrp", "--out", str(tmp_path)])
    assert cmd.run(args) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [s["text"] for s in res["sentences"]] == [FIRST, SECOND]
    for s in res["sentences"]:
        for m in ("rollout", "attnlrp"):
            d = s["methods"][m]
            assert len(d["tokens"]) == len(d["scores"]) > 0
    html = (tmp_path / "index.html").read_text()
    assert "guitar" in html and 'title="' in html
    with pytest.raises(cmd.UserError, match="unknown method"):
        cmd.run(parser.parse_args([FIRST, "--methods", "bogus", "--out", str(tmp_path)]))
    with pytest.raises(cmd.UserError, match="one or two"):
        cmd.run(parser.parse_args(["a", "b", "c", "--out", str(tmp_path)]))
    from interpretorch.cli import main

    assert main(["explain-text", FIRST, "--methods", "nope", "--out", str(tmp_path)]) == 2
