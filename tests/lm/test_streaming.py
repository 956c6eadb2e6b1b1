"""Streaming (each layer's maps recomputed from its queries and keys, or each whole layer recomputed, in the backward
pass): the same maps as the independent computation, prompts in a batch as alone, chosen when the kept maps would
not fit, and the model left as it was."""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.lm import LMExplainer, memory
from attngrad.lm import attribution as attribution_module

from .reference import reference

PROMPTS = ["the capital of france is", "a cat sat on the mat and", "it was"]
METHODS = ["complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "grad_x_input"]


@pytest.fixture(params=[("llama", "maps"), ("gpt2", "maps"), ("llama", "layers"), ("gpt2", "layers")],
                ids=lambda p: "-".join(p))
def streaming_lm(request, tiny_llama, tiny_gpt2, tokenizer):
    family, mode = request.param
    return LMExplainer(tiny_llama if family == "llama" else tiny_gpt2, tokenizer, streaming=mode)


@pytest.mark.parametrize("method", METHODS)
def test_streaming_matches_the_reference(streaming_lm, method):
    ids = streaming_lm.adapter.tokenize(PROMPTS[0])
    target = streaming_lm.adapter.tokenize("paris")[0]
    res = streaming_lm.explain(PROMPTS[0], method=method, target=" paris")
    want = reference(streaming_lm.adapter.model, ids, method, target)
    torch.testing.assert_close(res.scores(0), want, rtol=1e-4, atol=1e-6)
    assert want.abs().max() > 1e-5


def test_streaming_start_layer_and_contrast_match_the_reference(streaming_lm):
    ids = streaming_lm.adapter.tokenize(PROMPTS[1])
    res = streaming_lm.explain(PROMPTS[1], method="complete", target=" paris", contrast=" the", loss="diff",
                               start_layer=1)
    want = reference(streaming_lm.adapter.model, ids, "complete", streaming_lm.adapter.tokenize("paris")[0],
                     contrast=streaming_lm.adapter.tokenize("the")[0], loss="diff", start_layer=1)
    torch.testing.assert_close(res.scores(0), want, rtol=1e-4, atol=1e-6)


def test_left_padded_batch_equals_each_prompt_alone(streaming_lm):
    """The causal and padding masks reach the recomputed layers (a custom attention function without a
    mask function of its own would get none from transformers)."""
    together = streaming_lm.explain_methods(PROMPTS, ["complete", "rollout"])
    for i, prompt in enumerate(PROMPTS):
        alone = streaming_lm.explain_methods(prompt, ["complete", "rollout"])
        for name in ("complete", "rollout"):
            torch.testing.assert_close(together[name].scores(i), alone[name].scores(0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["maps", "layers"])
def test_the_model_is_left_as_it_was(tiny_llama, tokenizer, mode):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    lm = LMExplainer(tiny_llama, tokenizer, streaming=mode)
    lm.explain(PROMPTS[0])
    layers = tiny_llama.model.layers
    assert not any(layer.training or layer.gradient_checkpointing for layer in layers)
    assert tiny_llama.config._attn_implementation == "eager"
    for mapping in (AttentionInterface._global_mapping, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping):
        assert not [k for k in mapping if k.startswith("attngrad_")]


def _sizes(model, tokens):
    return {mode: memory.needed_bytes(model, 1, tokens, mode=mode) for mode in memory.MODES}


def test_streams_when_the_kept_maps_would_not_fit(tokenizer, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)  # deep enough and a prompt long enough that one layer's maps weigh less than all of them
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=8,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                                         pad_token_id=0, bos_token_id=None, eos_token_id=2)).eval()
    prompt = " ".join([PROMPTS[1]] * 30)
    size = _sizes(model, len(tokenizer(prompt)["input_ids"]))
    assert size["layers"] < size["maps"] < size["kept"]
    seen = []
    real_run = attribution_module.run
    monkeypatch.setattr("attngrad.lm.explainer.run", lambda *a, **k: seen.append(k["streaming"]) or real_run(*a, **k))
    lm = LMExplainer(model, tokenizer)  # streaming=None: chosen per pass
    scores = [lm.explain(prompt).scores(0)]
    for low, high in ((size["maps"], size["kept"]), (size["layers"], size["maps"])):
        monkeypatch.setattr(memory, "available_bytes", lambda device, m=(low + high) / 2: int(m / 0.9))
        scores.append(lm.explain(prompt).scores(0))
    assert seen == ["kept", "maps", "layers"]
    for other in scores[1:]:
        torch.testing.assert_close(other, scores[0], rtol=1e-4, atol=1e-6)
    with pytest.raises(AttngradError, match="relevance propagation .* cannot stream"):
        LMExplainer(model, tokenizer, streaming=True).explain(prompt, method="attnlrp")
    with pytest.raises(AttngradError, match="unknown streaming mode 'fast'"):
        LMExplainer(model, tokenizer, streaming="fast").explain(prompt)
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(size["layers"] / 2))
    with pytest.raises(AttngradError, match="needs about .* GB even one layer at a time"):
        lm.explain(prompt)
