"""Seq2SeqAdapter implements the model contract: maps in call order, attention override, sizes."""

from __future__ import annotations

import torch

from attngrad.models.base import ForwardOutput, ModelAdapter
from attngrad.seq2seq import Seq2SeqAdapter

SOURCES = ["the cat sat on the mat", "a dog ran"]
TARGETS = ["die katze sass", "ein hund lief"]


def test_adapter_members(seq2seq):
    _, model, tokenizer = seq2seq
    adapter = Seq2SeqAdapter(model, tokenizer)
    assert isinstance(adapter, ModelAdapter)
    batch = adapter.encode(SOURCES, TARGETS, [1, 2])
    with torch.no_grad():
        out = adapter.forward(batch)
    assert isinstance(out, ForwardOutput)
    enc, dec = len(out.encoder), len(out.decoder)
    assert adapter.num_layers == len(out.attentions) == enc + 2 * dec
    # call order: the encoder's layers, then each decoder layer's self- and cross-attention
    assert all(a is b for a, b in zip(out.attentions[:enc], out.encoder))
    assert all(a is b for a, b in zip(out.attentions[enc::2], out.decoder))
    assert all(a is b for a, b in zip(out.attentions[enc + 1::2], out.cross))
    assert len(adapter.labels) == out.logits.shape[-1]
    assert adapter.labels[tokenizer.eos_token_id] == tokenizer.eos_token
    assert adapter.special_tokens == {"decoder_start": 0}
    assert adapter.grid(batch) == (1, batch.input_ids.shape[1])


def test_override_with_own_maps_reproduces_the_logits(seq2seq):
    _, model, tokenizer = seq2seq
    adapter = Seq2SeqAdapter(model, tokenizer)
    batch = adapter.encode(SOURCES, TARGETS, [1, 2])
    with torch.no_grad():
        out = adapter.forward(batch)
        with adapter.override_attention([a.clone() for a in out.attentions]):
            same = adapter.forward(batch)
        flat = [torch.full_like(a, 1.0 / a.shape[-1]) for a in out.attentions]
        with adapter.override_attention(flat):
            other = adapter.forward(batch)
    torch.testing.assert_close(same.logits, out.logits)
    assert not torch.allclose(other.logits, out.logits)  # the stored maps are used
    torch.testing.assert_close(adapter.forward(batch).logits, out.logits)  # and gone afterwards


def test_sub_model_config_copies_switched_to_eager():
    """T5's encoder and decoder stacks hold their own copies of the config; transformers 5.17 leaves those on
    ``sdpa`` when the top config is switched, and the model then returns no maps. The adapter switches them."""
    from attngrad.seq2seq.model import Seq2SeqAdapter

    from .conftest import make_model

    model, tokenizer = make_model("t5")
    model.config._attn_implementation = "eager"
    for module in model.modules():  # the stacks' copies left on sdpa (as transformers 5.17 leaves them)
        if getattr(module, "config", None) is not None and module.config is not model.config:
            module.config._attn_implementation = "sdpa"
    adapter = Seq2SeqAdapter(model, tokenizer)
    configs = [m.config for m in adapter.model.modules() if getattr(m, "config", None) is not None]
    assert configs and all(c._attn_implementation == "eager" for c in configs)
    with torch.no_grad():
        out = adapter.forward(adapter.encode(SOURCES, TARGETS, [1, 2]))
    assert len(out.attentions) == adapter.num_layers
