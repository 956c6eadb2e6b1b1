"""Loading folders, bad input (one-line errors, exit code 2), truncation warnings, and the CLI commands."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.models import DEFAULT_MODEL
from attngrad.text import Pooling, TextExplainer, TruncationWarning

LONG = " ".join(["the cat sat on a mat"] * 5)  # 30 words: 32 tokens with [CLS] and [SEP]


@pytest.fixture(scope="module")
def folder_explainer(encoder_folder):
    return TextExplainer.from_pretrained(encoder_folder)


def test_folder_loads_with_its_pooling_and_limit(folder_explainer, tiny_encoder, tiny_tokenizer):
    adapter = folder_explainer.adapter
    assert adapter.pooling == Pooling("mean") and adapter.read == "pooled" and not adapter.is_classifier
    assert adapter.max_length == 16  # sentence_bert_config.json, below max_position_embeddings = 24
    ids = tiny_tokenizer(["the cat sat", "my team won the game"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = tiny_encoder(**ids).last_hidden_state.float()
    mask = ids["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    emb = folder_explainer.label_embeddings(["the cat sat", "my team won the game"])
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)


def test_pooling_config_variants(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    for flags, mode in (({"pooling_mode_cls_token": True}, "cls"), ({"pooling_mode_mean_sqrt_len_tokens": True}, "mean_sqrt_len")):
        (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(flags))
        assert Pooling.from_folder(tmp_path) == Pooling(mode)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(AttngradError, match="not supported"):
        Pooling.from_folder(tmp_path)


def test_mean_sqrt_len_pooling_is_sum_over_sqrt_length():
    hidden = torch.arange(12.0).view(1, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0]])
    expected = (hidden[0, 0] + hidden[0, 1] + hidden[0, 2]) / 3**0.5
    torch.testing.assert_close(Pooling("mean_sqrt_len")(hidden, mask)[0], expected)


def test_bad_inputs_raise_one_line_errors(folder_explainer, tmp_path):
    cases = [
        (lambda: folder_explainer.explain("", against="a cat"), "text 1 is empty"),
        (lambda: folder_explainer.explain(["a cat", "   "], labels="cat,dog"), "text 2 is empty"),
        (lambda: folder_explainer.explain("a cat", labels="sports,repair", target="cooking"), "unknown label 'cooking'; the labels are: sports, repair"),
        (lambda: folder_explainer.explain("a cat", labels="sports"), "at least two labels"),
        (lambda: folder_explainer.explain("a cat", labels="a,A"), "distinct"),
        (lambda: folder_explainer.explain("a cat"), "sentence encoder without classes"),
        (lambda: folder_explainer.explain("a cat", against="b", labels="a,b"), "not both"),
        (lambda: folder_explainer.explain(["a", "b", "c"], against=["x", "y"]), "2 texts to compare with for 3"),
        (lambda: TextExplainer.from_pretrained(DEFAULT_MODEL), "not a text encoder \\(model type 'vit'\\)"),
        (lambda: TextExplainer.from_pretrained(tmp_path), "no config.json"),
        (lambda: TextExplainer.from_pretrained(tmp_path / "missing-model"), "no such model folder"),
    ]
    for call, message in cases:
        with pytest.raises(AttngradError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def test_classifier_refuses_similarity_and_unknown_class(tiny_classifier, tiny_tokenizer):
    explainer = TextExplainer(tiny_classifier, tiny_tokenizer)
    with pytest.raises(AttngradError, match="is a classifier"):
        explainer.explain("a cat", against="a dog")
    with pytest.raises(AttngradError, match="unknown label 'sport'; the labels are: sports, finance, repair"):
        explainer.explain("a cat", target="sport")


def test_long_text_is_truncated_with_a_warning(folder_explainer):
    with pytest.warns(TruncationWarning, match="text 2 has 32 tokens, more than the model's limit of 16: its last 16 tokens were cut"):
        res = folder_explainer.explain(["the cat", LONG], against="a cat")
    assert res.maps.shape[1] == 16 and len(res.encoded.tokens[1]) == 16
    assert res.encoded.tokens[1][-1] == "[SEP]"


def test_cli_similarity_writes_html_and_json(encoder_folder, tmp_path):
    args = ["explain-text", "the cat sat", "my team won", "--against", "a dog sat on a mat", "--model", str(encoder_folder),
            "--method", "complete,gae", "--out", str(tmp_path), "--no-color"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "[complete, cos(A, B) = " in result.output and "  B: a[" in result.output
    records = json.loads((tmp_path / "scores.json").read_text())
    assert [(r["method"], r["text"]) for r in records] == [
        ("complete", "the cat sat"), ("complete", "my team won"), ("gae", "the cat sat"), ("gae", "my team won")
    ]
    assert "<span" in (tmp_path / "explanation.html").read_text()


def test_cli_zero_shot_and_truncation_warning(encoder_folder, tmp_path):
    args = ["explain-text", LONG, "--labels", "cat mat,team game", "--model", str(encoder_folder), "--out", str(tmp_path),
            "--loss", "normdiff", "--contrast", "top2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "attngrad: warning: text 1 has 32 tokens" in result.stderr
    assert "[complete, normdiff of " in result.stdout and " vs " in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["", "--labels", "cat,dog"], "text 1 is empty"),
        (["a cat", "--labels", "cat,dog", "--target", "c"], "unknown label 'c'"),
        (["a cat", "--labels", "cat,dog", "--method", "attn_gradcam"], "not defined on text"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(encoder_folder, args, message):
    result = CliRunner().invoke(main, ["explain-text", *args, "--model", str(encoder_folder)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error: ") and message in lines[0]


def test_cli_image_model_folder_is_not_a_text_model():
    result = CliRunner().invoke(main, ["explain-text", "a cat", "--labels", "a,b", "--model", str(DEFAULT_MODEL)])
    assert result.exit_code == 2 and "not a text encoder" in result.stderr


def test_missing_text_model_folder_talks_about_folders(tmp_path):
    for name in ("./nope", str(tmp_path / "absent")):
        with pytest.raises(AttngradError, match="no such model folder"):
            TextExplainer.from_pretrained(name)
    with pytest.raises(AttngradError, match="unknown device 'banana'"):
        TextExplainer.from_pretrained(str(tmp_path), device="banana")


def test_classifier_folder_without_its_head_is_refused(tmp_path, tiny_classifier, tiny_tokenizer):
    """transformers fills missing weights with random values: a classifier without its head explained noise."""
    import copy

    from safetensors.torch import load_file, save_file
    from transformers.utils import logging as hf_logging

    folder = tmp_path / "headless"
    copy.deepcopy(tiny_classifier).float().save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    weights = load_file(folder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(AttngradError, match=r"2 weights of BertForSequenceClassification are not in the folder \(classifier"):
        TextExplainer.from_pretrained(folder)
    was = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()  # transformers' loading table must not come before the one line
    try:
        result = CliRunner().invoke(main, ["explain-text", "a cat", "--model", str(folder), "--out", str(tmp_path / "o")])
    finally:
        hf_logging.set_verbosity(was)
    assert result.exit_code == 2 and not (tmp_path / "o").exists(), result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].endswith("so they would be random"), lines
