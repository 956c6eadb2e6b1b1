"""Integrated gradients at any layer of a causal LM (lm/ig.py): completeness, batched = one by one, first order."""

from __future__ import annotations

import copy

import pytest
import torch

from attngrad.lm import LMExplainer
from attngrad.lm.ig import lm_integrated_gradients

PROMPTS = ["the capital of france is", "a cat sat on the"]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm64(request, tiny_llama, tiny_gpt2, tokenizer):
    """The tiny LMs in float64 (completeness is checked to the quadrature error, not float32 noise)."""
    return LMExplainer(copy.deepcopy(tiny_llama if request.param == "llama" else tiny_gpt2).double(), tokenizer)


def test_lm_paths_complete_batched_and_first_order(lm64):
    tiny_lm = lm64
    # (llama's pad embedding is the zero vector, and zero is the RMSNorm's singular point: no smooth path from it)
    for layer, baseline in [("input", "mean"), ("hidden:1", "mean"), ("attention:2", "uniform"), ("attention:0", "zero")]:
        out = lm_integrated_gradients(tiny_lm, PROMPTS, layer=layer, baseline=baseline, steps=20, batch_size=7)
        err = out.result.error()
        assert err["relative"].max() < 1e-3, (layer, baseline, err)
        torch.testing.assert_close(out.scores.sum(dim=1), out.result.total, atol=1e-5, rtol=1e-5)
        alone = lm_integrated_gradients(tiny_lm, PROMPTS[1], layer=layer, baseline=baseline, steps=20)
        n = alone.scores.shape[1]
        torch.testing.assert_close(out.scores[1, -n:], alone.scores[0], atol=1e-5, rtol=1e-4)
    # grad x input, computed here: embeddings ⊙ ∂ logit / ∂ embeddings, summed over the features
    batch = tiny_lm.encode(PROMPTS)
    embeds = tiny_lm.adapter.embed(batch.input_ids).requires_grad_(True)
    logits = tiny_lm.adapter.forward(embeds, batch, attentions=False).logits
    target = logits.argmax(dim=-1)
    (grad,) = torch.autograd.grad(logits.gather(1, target.view(-1, 1)).sum(), embeds)
    out = lm_integrated_gradients(tiny_lm, PROMPTS, steps=1, rule="riemann_right")
    expected = (grad * embeds.detach()).sum(-1) * batch.attention_mask
    torch.testing.assert_close(out.scores, expected, atol=1e-6, rtol=1e-5)


def test_keep_first_leaves_the_first_token_out_of_the_path(lm64):
    out = lm_integrated_gradients(lm64, PROMPTS, baseline="mean", steps=16, keep_first=True)
    batch = lm64.encode(PROMPTS)
    first = [batch.input_ids.shape[1] - n for n in batch.lengths]
    for i, j in enumerate(first):
        assert out.scores[i, j] == 0  # x - x' = 0 there
        assert out.scores[i, j + 1 :].abs().sum() > 0
    assert out.result.error()["relative"].max() < 1e-3
    with pytest.raises(Exception, match="keep_first"):
        lm_integrated_gradients(lm64, PROMPTS, layer="hidden:1", keep_first=True)


def test_attention_path_ends_are_the_real_model(lm64):
    """f(x) of an attention path is the unmodified model's logit: the override keeps the causal and
    padding masks of the layers it leaves to the model (transformers builds none for an unknown
    attention implementation)."""
    batch = lm64.encode(PROMPTS)
    with torch.no_grad():
        logits = lm64.adapter.forward(lm64.adapter.embed(batch.input_ids), batch, attentions=False).logits
    for layer in ("attention:0", "attention:2"):
        out = lm_integrated_gradients(lm64, PROMPTS, layer=layer, steps=2, rule="trapezoid")
        torch.testing.assert_close(out.result.f_input, logits.gather(1, out.targets.view(-1, 1))[:, 0])


def test_the_public_signature_states_the_one_list_of_options():
    """``lm_integrated_gradients`` keeps its typed keywords; they are :class:`IGOptions`' names, types and defaults."""
    import dataclasses
    import inspect

    from attngrad.lm.ig import IG_OPTIONS, IGOptions

    params = inspect.signature(lm_integrated_gradients, eval_str=True).parameters
    hints = __import__("typing").get_type_hints(IGOptions)
    for f in dataclasses.fields(IGOptions):
        assert params[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        assert params[f.name].default == f.default and params[f.name].annotation == hints[f.name], f.name
    assert IG_OPTIONS == tuple(f.name for f in dataclasses.fields(IGOptions))
