"""One-line errors for what a user can get wrong, the views, and the explain-lm command on a tiny saved model."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from attngrad.cli import main
from attngrad.errors import AttngradError
from attngrad.lm import LMExplainer, MultiTokenWarning, save_generation_html, save_html, save_json, terminal

from .conftest import save_folder


def test_empty_prompt(tiny_lm):
    with pytest.raises(AttngradError, match="prompt 2 is empty"):
        tiny_lm.explain(["the cat", "  "])


def test_prompt_longer_than_context(tiny_lm):
    with pytest.raises(AttngradError, match="context of 32"):
        tiny_lm.explain(" ".join(["cat"] * 40))


def test_target_tokenising_to_nothing(tiny_lm):
    with pytest.raises(AttngradError, match="tokenises to nothing"):
        tiny_lm.explain("the cat", target=" ")


def test_contrast_equal_to_target(tiny_lm):
    with pytest.raises(AttngradError, match="contrast equals the target"):
        tiny_lm.explain("the cat", target=" paris", contrast="paris", loss="diff")


@pytest.mark.parametrize("spec", ["top0", "top65"])
def test_top_k_outside_the_vocabulary_names_its_size(tiny_lm, spec):
    with pytest.raises(AttngradError, match=f"{spec}': k must be between 1 .* and 64 .this model's vocabulary"):
        tiny_lm.explain("the cat", target=spec)


def test_unknown_method_and_missing_contrast(tiny_lm):
    with pytest.raises(AttngradError, match="unknown method 'partial_lrp'"):
        tiny_lm.explain("the cat", method="partial_lrp")
    with pytest.raises(AttngradError, match="compares two tokens"):
        tiny_lm.explain("the cat", loss="diff")
    with pytest.raises(AttngradError, match="two-token loss"):
        tiny_lm.explain("the cat", contrast=" rome")


def test_multi_token_target_warns_and_uses_first(tiny_lm):
    with pytest.warns(MultiTokenWarning, match="first token"):
        res = tiny_lm.explain("the cat", target=" paris rome")
    assert res.target_text == ["paris"]


def test_runner_up_differs_from_target(tiny_lm):
    res = tiny_lm.explain(["the cat", "it was"], contrast="runner-up", loss="diff")
    top = res.logits.topk(2, dim=1).indices
    assert res.targets.tolist() == top[:, 0].tolist() and res.contrasts.tolist() == top[:, 1].tolist()
    res = tiny_lm.explain("the cat", target="top2", contrast="runner-up", loss="diff")
    assert int(res.contrasts[0]) == int(res.logits[0].argmax())


def test_model_without_attention_maps(tiny_llama, tokenizer):
    class NoMaps(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_input_embeddings(self):
            return self.inner.get_input_embeddings()

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def forward(self, **kwargs):
            out = self.inner(**kwargs)
            out.attentions = None
            return out

    with pytest.raises(AttngradError, match="returned no attention maps"):
        LMExplainer(NoMaps(tiny_llama), tokenizer).explain("the cat")


def test_sdpa_model_is_switched_to_eager(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=16, attn_implementation="sdpa")
    res = LMExplainer(LlamaForCausalLM(cfg).eval(), tokenizer).explain("the cat")
    assert res.scores(0).abs().sum() > 0


def test_views(tiny_lm, tmp_path):
    res = tiny_lm.explain(["the capital of france is", "it was"], target=" paris")
    plain = terminal(res.tokens[0], res.scores(0).tolist(), colour=False)
    assert plain.startswith("the[") and "capital[" in plain
    assert "hidden" in terminal(res.tokens[0], res.scores(0).tolist(), colour=False, hide_first=True)
    page = save_html(tmp_path / "e.html", [res]).read_text()
    assert page.count('title="score') == sum(res.batch.lengths)
    gen = tiny_lm.explain_generation("the cat", max_new_tokens=3)
    gpage = save_generation_html(tmp_path / "g.html", gen).read_text()
    assert "show(0)" in gpage and gpage.count('<tr data-k=') == len(gen.generated)
    data = json.loads(save_json(tmp_path / "s.json", [res], gen).read_text())
    assert [t["token"] for t in data["prompts"][1]["tokens"]] == ["it", "was"]
    assert len(data["generation"]["maps"]) == len(gen.generated)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_gpt2, tokenizer):
    return save_folder(tmp_path_factory.mktemp("tiny-gpt2"), tiny_gpt2, tokenizer)


def test_from_pretrained_folder(saved_model):
    lm = LMExplainer.from_pretrained(saved_model)
    assert lm.adapter.model.config._attn_implementation == "eager"
    assert lm.max_length == 32


def test_cli_explain_lm(saved_model, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["explain-lm", "the capital of france is", "it was", "--model", str(saved_model),
                                  "--method", "complete,grad_x_input", "--out", str(out), "--no-color"])
    assert r.exit_code == 0, r.output
    assert "diff of" in r.output and " vs " in r.output  # default: the target against the runner-up
    data = json.loads((out / "scores.json").read_text())
    assert len(data["prompts"]) == 4 and all(p["contrast"] for p in data["prompts"])
    assert (out / "explanation.html").exists()
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--loss", "logit",
                                  "--out", str(out), "--no-color"])
    assert r.exit_code == 0 and "logit of" in r.output and " vs " not in r.output, r.output
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--out", str(out), "--no-color"])
    assert r.exit_code == 0 and "[attnlrp, diff of" in r.output, r.output  # the default method (a Llama)
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--contrast", " rome",
                                  "--out", str(out), "--no-color"])
    assert r.exit_code == 0 and "diff of" in r.output and "vs 'rome'" in r.output, r.output
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--loss", "normdiff",
                                  "--out", str(out), "--no-color"])
    assert r.exit_code == 0 and "normdiff of" in r.output and " vs " in r.output, r.output  # runner-up
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--method", "all",
                                  "--out", str(out), "--no-color"])
    assert r.exit_code == 0 and r.output.count("[") >= 8, r.output  # every LM method, none of the image ones
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--generate", "3",
                                  "--out", str(out), "--no-color"])
    assert r.exit_code == 0, r.output
    assert (out / "generation.html").exists()


@pytest.mark.parametrize("args, message", [
    (["  "], "prompt 1 is empty"),
    (["the cat", "--method", "nope"], "unknown method 'nope'"),
    (["the cat", "--target", "paris", "--contrast", "paris"], "contrast equals the target"),
    (["the cat", "--target", " "], "tokenises to nothing"),
    ([" ".join(["cat"] * 40)], "context of 32"),
    (["the cat", "--target", "zebra"], "target 'zebra' is not in this model's vocabulary"),
    (["the cat", "--contrast", "99999"], "contrast '99999' is not in this model's vocabulary"),
])
def test_cli_errors_are_one_line(saved_model, tmp_path, args, message):
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["explain-lm", *args, "--model", str(saved_model), "--out", str(out)])
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and message in r.output and r.output.startswith("attngrad: error:")
    assert not out.exists()  # nothing half-written


def test_hide_first_on_a_one_token_prompt_is_one_line(saved_model, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["explain-lm", "paris", "--model", str(saved_model), "--hide-first", "--out", str(out)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "has only one token" in lines[0], lines
    assert not out.exists()


def test_cli_default_method_falls_back_to_complete_outside_attnlrps_families(saved_model, tmp_path, monkeypatch):
    monkeypatch.delitem(__import__("attngrad.lm.attnlrp", fromlist=["FAMILIES"]).FAMILIES, "gpt2")
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--out", str(tmp_path / "o"),
                                  "--no-color"])
    assert r.exit_code == 0, r.output
    assert "[complete, diff of" in r.output and "attnlrp does not know the 'gpt2' family" in r.stderr
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "-m", "attnlrp",
                                  "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "attnlrp and tattr know the" in r.stderr  # asked for by name: refused, not replaced


def test_cli_streaming_without_a_method_explains_with_complete(saved_model, tmp_path):
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--streaming", "always",
                                  "--out", str(tmp_path / "o"), "--no-color"])
    assert r.exit_code == 0, r.output
    assert "[complete, diff of" in r.output and "attnlrp cannot stream" in r.stderr
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(saved_model), "--streaming", "always",
                                  "-m", "attnlrp", "--out", str(tmp_path / "p")])
    assert r.exit_code == 2 and "cannot stream" in r.stderr


def test_word_outside_the_vocabulary_is_refused_not_explained_as_unknown(tiny_lm):
    """A word-level tokenizer maps an unknown word to <unk>: explaining <unk> instead is a silent wrong answer."""
    with pytest.raises(AttngradError, match="target ' zebra' is not in this model's vocabulary"):
        tiny_lm.explain("the cat", target=" zebra")
    with pytest.raises(AttngradError, match="contrast ' zebra' is not in this model's vocabulary"):
        tiny_lm.explain("the cat", contrast=" zebra", loss="diff")
    assert tiny_lm.explain("the cat", target="<unk>").target_text == ["<unk>"]  # asked for by name


def test_folder_without_an_lm_head_is_refused(tmp_path, tokenizer):
    """A BERT classifier folder loads as BertLMHeadModel with a random LM head: refused, in one line."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path / "bert"
    BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with pytest.raises(AttngradError, match="weights of BertLMHeadModel are not in the folder"):
        LMExplainer.from_pretrained(folder)
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["explain-lm", "the cat", "--model", str(folder), "--out", str(out)])
    assert r.exit_code == 2 and not out.exists(), r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attngrad: error:") and "would be random" in lines[0], lines


@pytest.mark.parametrize("count", [1.5, float("nan"), True])
def test_generation_length_must_be_a_whole_number(tiny_lm, count):
    with pytest.raises(AttngradError, match="max_new_tokens must be a whole number"):
        tiny_lm.explain_generation("the cat", max_new_tokens=count)
