"""``attngrad explain-seq2seq`` on a tiny random BART saved to a folder: outputs, one-line errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from attngrad.cli import main

from .conftest import make_model


@pytest.fixture(scope="module")
def bart_folder(tmp_path_factory):
    model, tokenizer = make_model("bart")
    folder = tmp_path_factory.mktemp("tiny-bart")
    model.float().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _run(*args):
    return CliRunner().invoke(main, ["explain-seq2seq", *map(str, args)])


def test_all_positions_write_page_scores_and_alignment(bart_folder, tmp_path):
    out = tmp_path / "out"
    res = _run("the cat sat on the mat", "--model", bart_folder, "--target", "die katze sass", "--position", "all",
               "--method", "complete,gae", "--out", out, "--no-color")
    assert res.exit_code == 0, res.output
    records = json.loads((out / "scores.json").read_text())
    assert len(records) == 2 * 5  # two methods x (<s> die katze sass </s>)
    assert [r["token"] for r in records[:5]] == ["<s>", "die", "katze", "sass", "</s>"]
    assert {r["method"] for r in records} == {"complete", "gae"}
    assert [w["text"] for w in records[3]["source_words"]] == ["the", "cat", "sat", "on", "the", "mat"]
    assert (out / "alignment-complete.png").stat().st_size > 0 and (out / "alignment-gae.png").exists()
    assert "katze" in (out / "explanation.html").read_text()
    assert "source: the[" in res.output


def test_greedy_next_token(bart_folder, tmp_path):
    res = _run("the cat sat", "a dog", "--model", bart_folder, "--out", tmp_path / "o", "--no-color")
    assert res.exit_code == 0, res.output
    records = json.loads((tmp_path / "o" / "scores.json").read_text())
    assert [r["position"] for r in records] == [0, 0]


@pytest.mark.parametrize("args,message", [
    (["--position", "x", "--target", "die"], "--position 'x'"),
    (["--position", "all"], "needs --target"),
    (["--method", "lrp"], "unknown method"),
    (["--loss", "nope"], "unknown loss"),
    (["--target", "die", "--position", "7"], "out of range"),
])
def test_bad_input_is_one_line_and_writes_nothing(bart_folder, tmp_path, args, message):
    out = tmp_path / "never"
    res = _run("the cat", "--model", bart_folder, "--out", out, *args)
    assert res.exit_code == 2
    assert res.output.startswith("attngrad: error: ") and message in res.output
    assert res.output.count("\n") == 1
    assert not out.exists()


def test_not_a_model_folder(tmp_path):
    res = _run("the cat", "--model", tmp_path)
    assert res.exit_code == 2 and "no config.json" in res.output


def test_an_encoder_folder_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    res = _run("the cat", "--model", tmp_path)
    assert res.exit_code == 2 and "not an encoder-decoder model" in res.output


def test_the_target_line_stops_before_the_explained_token(bart_folder, tmp_path):
    res = _run("the cat sat", "--model", bart_folder, "--target", "die katze sass auf", "--position", "3",
               "--out", tmp_path / "o", "--no-color")
    assert res.exit_code == 0, res.output
    line = next(li for li in res.output.splitlines() if li.startswith("  target: "))
    assert line.startswith("  target: die[") and "katze[" in line and line.endswith("-> sass")
    assert "auf" not in line


def test_contrast_equal_to_target_is_refused(bart_folder, tmp_path):
    """diff against the explained token itself is 0 with an all-zero map: refused, nothing written."""
    from transformers import AutoTokenizer

    token = AutoTokenizer.from_pretrained(bart_folder).tokenize("die")[0]
    out = tmp_path / "never"
    res = _run("the cat", "--model", bart_folder, "--target", "die katze", "--position", "1", "--loss", "diff",
               "--contrast", token, "--out", out)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: the contrast equals the explained token"), lines
    assert not out.exists()


def test_an_exactly_empty_map_says_so(bart_folder, tmp_path):
    """complete's source map at decoder position 0 is exactly zero: never printed silently, one warning line."""
    res = _run("the cat", "--model", bart_folder, "--target", "die katze", "--position", "0", "--method", "complete,gae",
               "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.stderr.splitlines() if line.startswith("attngrad: warning:")]
    assert len(warnings) == 1 and "complete: the source map of row 1 is exactly zero" in warnings[0], res.stderr


@pytest.mark.parametrize("args,message", [
    (["hello world"], "the source text 'hello world' has words this model does not know ('hello', 'world')"),
    (["the big cat sees a dog", "--target", "mau xyzzy"], "the target text 'mau xyzzy' has words this model does not "
                                                           "know ('xyzzy')"),
])
def test_words_outside_the_vocabulary_are_refused_not_explained_as_unk(tmp_path, args, message):
    """The synthetic model's word vocabulary maps unknown words to <unk>; a map over <unk> would be a silent wrong
    answer (it was written with exit 0)."""
    out = tmp_path / "never"
    res = _run(*args, "--out", out)
    assert res.exit_code == 2 and res.stderr.strip() == f"attngrad: error: {message}: they tokenise to '<unk>'; use " \
                                                          "words of its vocabulary", res.output
    assert not out.exists()
