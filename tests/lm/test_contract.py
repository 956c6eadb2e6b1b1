"""The causal-LM adapter on the modality-neutral model contract (models/base.py), on tiny random Llama (GQA) and GPT-2."""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.lm import LMAdapter
from attngrad.models.base import ForwardOutput, ModelAdapter
from attngrad.models.hf import HFModelAdapter

PROMPTS = ["the capital of france is", "it was", "a cat sat on the mat and"]


@pytest.fixture(params=["llama", "gpt2"])
def adapter(request, tiny_llama, tiny_gpt2, tokenizer):
    return LMAdapter(tiny_llama if request.param == "llama" else tiny_gpt2, tokenizer)


def _batch(adapter):
    return adapter.batch([adapter.tokenize(p) for p in PROMPTS], PROMPTS)


def test_is_a_model_adapter(adapter, tokenizer):
    assert isinstance(adapter, ModelAdapter) and isinstance(adapter, HFModelAdapter)
    assert adapter.num_layers == 3
    assert adapter.special_tokens == {} and adapter.num_prefix_tokens == 0
    assert adapter.token_index("last") == -1 and adapter.token_index(-1) == -1
    with pytest.raises(AttngradError, match="last position"):
        adapter.token_index("cls")
    vocab = adapter.model.get_output_embeddings().weight.shape[0]
    assert len(adapter.labels) == vocab  # the logits' columns
    assert adapter.labels[tokenizer.convert_tokens_to_ids("paris")] == "paris"
    assert adapter.model.config._attn_implementation == "eager"
    batch = _batch(adapter)
    assert adapter.grid(batch) == (1, batch.input_ids.shape[1])
    assert adapter.grid(adapter.embed(batch.input_ids)) == (1, batch.input_ids.shape[1])


def test_forward_reads_the_last_position_of_each_prompt_alone(adapter):
    batch = _batch(adapter)
    x = adapter.embed(batch.input_ids).requires_grad_(True)
    with adapter.frozen_weights():
        out = adapter.forward(x, batch)
        assert not any(w.requires_grad for w in adapter.model.parameters())
    assert all(w.requires_grad for w in adapter.model.parameters())  # restored
    assert isinstance(out, ForwardOutput)
    b, n = batch.input_ids.shape
    heads = adapter.model.config.num_attention_heads
    assert out.logits.shape == (b, adapter.model.config.vocab_size)
    assert len(out.attentions) == 3 and all(a.shape == (b, heads, n, n) for a in out.attentions)
    assert all(a.requires_grad for a in out.attentions)  # in the graph (from the embeddings; weights frozen)
    for i, prompt in enumerate(PROMPTS):  # each prompt's logits are its logits alone (left padding, positions)
        alone = adapter.model(torch.tensor([adapter.tokenize(prompt)])).logits[0, -1]
        torch.testing.assert_close(out.logits[i], alone, rtol=1e-5, atol=1e-5)
    same = adapter.forward(batch)  # a Batch alone is embedded by the adapter
    torch.testing.assert_close(same.logits, out.logits, rtol=0, atol=0)
    assert adapter.forward(batch, attentions=False).attentions == []


def test_override_with_own_maps_reproduces_the_logits_exactly(adapter):
    batch = _batch(adapter)
    with torch.no_grad():
        out = adapter.forward(batch)
        with adapter.override_attention(out.attentions):
            again = adapter.forward(batch)
        assert torch.equal(again.logits, out.logits)
        assert all(torch.equal(a, b) for a, b in zip(again.attentions, out.attentions))
        # other maps change the logits: every token attends to itself only
        own_only = [torch.eye(a.shape[-1]).expand_as(a) for a in out.attentions]
        with adapter.override_attention(own_only):
            other = adapter.forward(batch)
        assert (other.logits - out.logits).abs().max() > 1e-2
    assert adapter.model.config._attn_implementation == "eager"  # the override ended with its context
    with torch.no_grad():
        assert torch.equal(adapter.forward(batch).logits, out.logits)


def test_nested_overrides_keep_their_own_maps(adapter):
    batch = _batch(adapter)
    with torch.no_grad():
        own = adapter.forward(batch)
        own_only = [torch.eye(a.shape[-1]).expand_as(a) for a in own.attentions]  # every token attends to itself
        with adapter.override_attention(own_only):
            first = adapter.forward(batch).logits
            with adapter.override_attention(own.attentions):
                inner = adapter.forward(batch).logits
            after = adapter.forward(batch).logits
    assert torch.equal(inner, own.logits)
    assert torch.equal(after, first) and (first - own.logits).abs().max() > 1e-2


def test_bad_device_is_a_clear_error(tiny_gpt2, tokenizer):
    from attngrad.lm import LMExplainer

    with pytest.raises(AttngradError, match="unknown device 'banana'"):
        LMExplainer(tiny_gpt2, tokenizer, device="banana")
