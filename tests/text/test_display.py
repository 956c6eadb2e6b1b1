"""Words from word pieces, colours, HTML, terminal and JSON views, checked against hand-made values."""

from __future__ import annotations

import json

import pytest
import torch

from attngrad.text import TextExplainer, merge_words, save_json, terminal, to_html, to_records
from attngrad.text.display import colours, normalized_words


def test_merge_words_sums_pieces_and_keeps_original_spans(tiny_tokenizer):
    text = "The cats playing?"
    enc = tiny_tokenizer(text, return_offsets_mapping=True)
    tokens = tiny_tokenizer.convert_ids_to_tokens(enc["input_ids"])
    assert tokens == ["[CLS]", "the", "cat", "##s", "play", "##ing", "?", "[SEP]"]
    scores = [9.0, 1.0, 2.0, 0.5, -1.0, -0.25, 0.125, 9.0]
    keep = [False, True, True, True, True, True, True, False]
    words = merge_words(text, tokens, scores, enc.word_ids(), enc["offset_mapping"], keep)
    assert [(w.text, w.score, w.start, w.end) for w in words] == [
        ("The", 1.0, 0, 3), ("cats", 2.5, 4, 8), ("playing", -1.25, 9, 16), ("?", 0.125, 16, 17)
    ]


def test_merge_words_without_offsets_joins_pieces():
    words = merge_words("", ["[CLS]", "play", "##ing", "on", "[SEP]"], [0, 1.0, 2.0, 3.0, 0], [None, 0, 0, 1, None],
                        [(0, 0)] * 5, [False, True, True, True, False])
    assert [(w.text, w.score) for w in words] == [("playing", 3.0), ("on", 3.0)]


def test_colours_are_the_images_diverging_map():
    red, white, blue = colours([1.0, 0.0, -1.0])
    assert red == (255, 0, 0) and blue == (0, 0, 255)
    assert min(white) >= 250


def test_terminal_view_normalises_by_max_abs():
    from attngrad.text import Word

    text = "good bad so"
    words = [Word("good", 2.0, 0, 4), Word("bad", -4.0, 5, 8), Word("so", 0.0, 9, 11)]
    assert normalized_words(words) == [0.5, -1.0, 0.0]
    assert terminal(text, words, colour=False) == "good[+0.50] bad[-1.00] so[+0.00]"
    coloured = terminal(text, words, colour=True)
    assert "\x1b[48;2;0;0;255m" in coloured  # "bad" at -1: pure blue background
    assert coloured.count("\x1b[0m") == 3


@pytest.fixture(scope="module")
def result(tiny_classifier, tiny_tokenizer):
    return TextExplainer(tiny_classifier, tiny_tokenizer).explain(["the cats playing <b>", "my team won"], target="sports")


def test_html_page_colours_the_top_word_red_and_escapes(result):
    page = to_html([result])
    assert page.startswith("<!doctype html>") and "linear-gradient" in page and "S / max|S|" in page
    body = page.split("</style>")[1]
    assert "&lt;</span>" in body and "&gt;</span>" in body and "<b>" not in body
    for i in range(2):
        words = result.words(i)
        top = max(words, key=lambda w: abs(w.score))
        colour = "rgb(255, 0, 0)" if top.score > 0 else "rgb(0, 0, 255)"
        assert f'background: {colour}; color: rgb(255, 255, 255)" title="score {top.score:.4g}' in page


def test_json_records_hold_raw_token_and_word_scores(result, tmp_path):
    path = save_json(tmp_path / "s.json", [result])
    records = json.loads(path.read_text())
    assert len(records) == 2 and records[0]["target"] == "sports" and records[0]["method"] == "complete"
    for i, record in enumerate(records):
        n = len(result.encoded.tokens[i])
        expected = result.maps[i, 1 : n - 1].tolist()
        assert [t["score"] for t in record["tokens"]] == pytest.approx(expected, rel=1e-12)
        assert sum(w["score"] for w in record["words"]) == pytest.approx(sum(expected), rel=1e-9)
        assert set(record["logits"]) == {"sports", "finance", "repair"}
    assert [t["token"] for t in records[0]["tokens"]] == ["the", "cat", "##s", "play", "##ing", "[UNK]", "[UNK]", "[UNK]"]


def test_normalized_is_within_unit_range_with_sign(result):
    norm = result.normalized()
    assert torch.allclose(norm.abs().amax(dim=1), torch.ones(2, dtype=norm.dtype))
    assert torch.equal(torch.sign(norm), torch.sign(result.maps))


def test_similarity_records_include_the_other_direction(tiny_encoder, tiny_tokenizer):
    res = TextExplainer(tiny_encoder, tiny_tokenizer).explain("the cat sat", against="a dog sat on a mat", method="gae")
    (record,) = to_records(res)
    assert record["against"]["text"] == "a dog sat on a mat"
    assert [w["text"] for w in record["against"]["words"]] == ["a", "dog", "sat", "on", "a", "mat"]
    assert "the other direction" in to_html([res])
