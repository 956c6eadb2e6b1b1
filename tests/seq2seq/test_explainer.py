"""Seq2SeqExplainer: batching and padding, positions, greedy default, words, errors."""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.seq2seq import Seq2SeqExplainer

from .conftest import make_model

SOURCES = ["the cat sat on the mat", "a dog ran in the park and my car is red", "my car"]
TARGETS = ["die katze sass auf der matte", "ein hund", None]


@pytest.fixture(scope="module")
def bart():
    model, tokenizer = make_model("bart")
    return Seq2SeqExplainer(model, tokenizer)


@pytest.mark.parametrize("method", ["complete", "gae"])
def test_padded_batch_equals_one_by_one(seq2seq, method):
    _kind, model, tokenizer = seq2seq
    ex = Seq2SeqExplainer(model, tokenizer)
    positions = [3, 1, None]
    batch = ex.explain(SOURCES, TARGETS, method=method, position=positions)
    for i, (s, t, p) in enumerate(zip(SOURCES, TARGETS, positions)):
        one = ex.explain(s, t, method=method, position=p)
        n_s, n_t = one.source_scores.shape[1], one.target_scores.shape[1]
        assert int(one.tokens[0]) == int(batch.tokens[i])
        torch.testing.assert_close(batch.source_scores[i, :n_s], one.source_scores[0], rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(batch.target_scores[i, :n_t], one.target_scores[0], rtol=1e-7, atol=1e-12)
        assert (batch.source_scores[i, n_s:] == 0).all() and (batch.target_scores[i, n_t:] == 0).all()
        assert [t for t, _ in batch.source_tokens(i)] == [t for t, _ in one.source_tokens(0)]
        assert [t for t, _ in batch.target_tokens(i)] == [t for t, _ in one.target_tokens(0)]


def test_padding_changes_nothing_in_the_rules(bart):
    """The same pair with a much longer partner in its batch gets the same maps (masks, not luck)."""
    alone = bart.explain("my car", "mein auto", method="complete", position=1)
    padded = bart.explain(["my car", SOURCES[1]], ["mein auto", TARGETS[0]], method="complete", position=[1, 5])
    torch.testing.assert_close(padded.source_scores[0, : alone.source_scores.shape[1]], alone.source_scores[0])


def test_all_positions_is_one_row_per_target_token(bart):
    every = bart.explain(SOURCES[0], TARGETS[0], method="complete", position="all")
    labels = bart.adapter.tokenizer(text_target=TARGETS[0])["input_ids"]
    assert every.tokens.tolist() == labels
    assert every.positions == list(range(len(labels)))
    third = bart.explain(SOURCES[0], TARGETS[0], method="complete", position=2)
    torch.testing.assert_close(every.source_scores[2], third.source_scores[0])
    last = bart.explain(SOURCES[0], TARGETS[0], method="complete", position=-1)
    assert int(last.tokens[0]) == labels[-1] == bart.adapter.eos


def test_greedy_default_explains_the_argmax_after_the_prefix(bart):
    res = bart.explain(SOURCES[0], "die katze")
    model = bart.adapter.model
    labels = bart.adapter.tokenizer(text_target="die katze")["input_ids"][:-1]  # end-of-sequence removed
    decoder = [bart.adapter.start] + labels
    src = bart.adapter.tokenizer(SOURCES[0], return_tensors="pt")
    with torch.no_grad():
        logits = model(**src, decoder_input_ids=torch.tensor([decoder])).logits[0, -1]
    assert int(res.tokens[0]) == int(logits.argmax())
    assert float(res.values[0]) == pytest.approx(float(logits.max()))
    assert res.positions == [len(decoder) - 1]
    nothing = bart.explain(SOURCES[0])  # no target: the first generated token
    assert nothing.positions == [0] and nothing.batch.decoder.tokens[0] == ["</s>"]


def test_words_drop_special_tokens_and_keep_the_text(bart):
    res = bart.explain(SOURCES[0], TARGETS[0], position=3)
    words = res.source_words(0)
    assert [w.text for w in words] == SOURCES[0].split()
    assert sum(w.score for w in words) == pytest.approx(sum(s for t, s in res.source_tokens(0) if t not in ("<s>", "</s>")))
    assert [w.text for w in res.target_words(0)] == ["die", "katze"]  # tokens before "sass"


def test_two_token_loss_uses_the_contrast(bart):
    res = bart.explain(SOURCES[0], TARGETS[0], position=1, loss="diff", contrast="hund")
    plain = bart.explain(SOURCES[0], TARGETS[0], position=1)
    assert not torch.allclose(res.source_scores, plain.source_scores)


@pytest.mark.parametrize("kwargs,message", [
    ({"target": "die katze", "position": 9}, "out of range"),
    ({"target": None, "position": 1}, "needs a target"),
    ({"target": None, "position": "all"}, "needs a target"),
    ({"target": "die", "position": "last"}, "position must be"),
    ({"target": "die", "method": "lrp"}, "unknown method"),
    ({"target": ["a", "b"]}, "2 target values for 1"),
    ({"target": "die", "position": 0, "loss": "diff"}, "contrast"),
    ({"target": "die", "position": 0, "loss": "diff", "contrast": "zzz"}, "not a token"),
    ({"target": "die", "position": 0, "contrast": "hund"}, "a contrast token needs a two-token loss"),  # logit: ignored
    ({"target": "die", "position": 0, "loss": "diff", "contrast": -1}, "contrast token id -1 is out of range"),
    ({"target": "die", "position": 0, "loss": "diff", "contrast": 10**6}, "contrast token id 1000000 is out of range"),
    ({"target": " "}, "target 1 is empty"),  # was: explained from the start token as if no target were given
])
def test_user_mistakes_raise_attngrad_errors(bart, kwargs, message):
    with pytest.raises(AttngradError, match=message):
        bart.explain(SOURCES[0], **kwargs)


def test_empty_source_is_refused(bart):
    with pytest.raises(AttngradError, match="source 2 is empty"):
        bart.explain([SOURCES[0], "  "])


def test_not_an_encoder_decoder_is_refused():
    from transformers import BertConfig, BertModel

    from .conftest import tiny_tokenizer

    with pytest.raises(AttngradError, match="not an encoder-decoder"):
        Seq2SeqExplainer(BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                              intermediate_size=8)), tiny_tokenizer("$A </s>"))


def test_frozen_weights_still_give_maps_and_stay_frozen():
    model, tokenizer = make_model("t5")
    for w in model.parameters():
        w.requires_grad_(False)
    res = Seq2SeqExplainer(model, tokenizer).explain(SOURCES[0], TARGETS[0], position=2)
    assert res.source_scores.abs().sum() > 0
    assert not any(w.requires_grad for w in model.parameters())


def test_a_slow_sentencepiece_style_tokenizer_works():
    """Marian's tokenizer is slow (no offsets): words are joined from their "▁" pieces; maps as with a fast one."""
    from .conftest import tiny_slow_tokenizer

    model, _ = make_model("marian")
    slow = tiny_slow_tokenizer()
    model.resize_token_embeddings(len(slow), mean_resizing=False)
    ex = Seq2SeqExplainer(model, slow)
    res = ex.explain(["the cat sat on the mat", "my car"], ["die katze sass", "mein auto"], position=[3, 1])
    assert res.batch.source.tokens[0][:3] == ["▁the", "▁cat", "▁sat"]
    assert [w.text for w in res.target_words(0)] == ["die", "katze"]  # ▁die ▁kat ze, before ▁sas
    words = res.source_words(1)
    assert [w.text for w in words] == ["my", "car"]
    one = ex.explain("my car", "mein auto", position=1)
    torch.testing.assert_close(res.source_scores[1, :3], one.source_scores[0], rtol=1e-7, atol=1e-12)
    assert res.token_names[0] == "▁sas"


def test_a_text_over_the_limit_is_refused_not_cut(bart):
    long = " ".join(["the cat sat on the mat"] * 12)  # 72 words + 2 special tokens > 64 positions
    with pytest.raises(AttngradError, match="more than the model's limit of 64"):
        bart.explain(long)
    with pytest.raises(AttngradError, match="target text"):
        bart.explain("the cat", long, position=0)
