"""AttnLRP and LM T-Attr against the hand-written rules of lrp_reference.py (tiny random Llama with GQA, GPT-2)."""

from __future__ import annotations

import pytest
import torch

from attngrad.lm import LMExplainer
from attngrad.lm.attnlrp import lrp_rules

from . import lrp_reference
from .reference import reference

PROMPTS = ["the capital of france is", "a cat sat on the mat and", "it was"]


def _reference(lm, prompt, target):
    model = lm.adapter.model
    fn = lrp_reference.gpt2 if model.config.model_type == "gpt2" else lrp_reference.llama
    return fn(model, lm.adapter.tokenize(prompt), target)


@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_attnlrp_matches_hand_written_rules(tiny_lm, prompt):
    target = tiny_lm.adapter.word_ids("paris")[0]
    got = tiny_lm.explain(prompt, method="attnlrp", target=" paris").scores(0)
    want, _ = _reference(tiny_lm, prompt, target)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


def test_tattr_matches_hand_written_rules(tiny_lm):
    target = tiny_lm.adapter.word_ids("paris")[0]
    ids = tiny_lm.adapter.tokenize(PROMPTS[0])
    got = tiny_lm.explain(PROMPTS[0], method="tattr", target=" paris").scores(0)
    _, r_attn = _reference(tiny_lm, PROMPTS[0], target)
    # the true gradients of the maps, as reference.py takes them (plain autograd of the unmodified model)
    model = tiny_lm.adapter.model
    x = model.get_input_embeddings()(torch.tensor([ids])).detach()
    out = model(inputs_embeds=x, output_attentions=True)
    grads = torch.autograd.grad(out.logits[0, -1, target], list(out.attentions))
    n, heads = len(ids), grads[0].shape[1]
    row = torch.zeros(n, dtype=torch.float64)
    row[-1] = 1.0
    for layer in reversed(range(len(grads))):
        mix = torch.zeros(n, n, dtype=torch.float64)
        for h in range(heads):
            mix += torch.clamp(grads[layer][0, h].double() * r_attn[layer][h], min=0)
        abar = torch.eye(n, dtype=torch.float64) + mix / heads
        row = row @ (abar / abar.sum(dim=1, keepdim=True))
    torch.testing.assert_close(got.double(), row, rtol=1e-4, atol=1e-6)


def test_batched_and_left_padded_equal_alone(tiny_lm):
    both = tiny_lm.explain_methods(PROMPTS, ["attnlrp", "tattr", "complete"], target=" paris")
    for i, prompt in enumerate(PROMPTS):
        alone = tiny_lm.explain_methods(prompt, ["attnlrp", "tattr"], target=" paris")
        for name in ("attnlrp", "tattr"):
            torch.testing.assert_close(both[name].scores(i), alone[name].scores(0), rtol=1e-5, atol=1e-6)
    # the mixed call's attention method is the plain pass's own
    want = reference(tiny_lm.adapter.model, tiny_lm.adapter.tokenize(PROMPTS[2]), "complete",
                     tiny_lm.adapter.word_ids("paris")[0])
    torch.testing.assert_close(both["complete"].scores(2), want, rtol=1e-4, atol=1e-6)


def test_conservation_through_the_last_mlp(tiny_llama, tokenizer):
    """No biases in Llama: the relevance entering the last MLP block (residual, norm, gated product halved,
    activation, linear layers) sums to the explained logit, and so does the final norm's input."""
    lm = LMExplainer(tiny_llama, tokenizer)
    kept = {}
    last = tiny_llama.model.layers[-1]

    def keep(name):
        def hook(module, args):
            args[0].retain_grad()
            kept[name] = args[0]
        return hook

    handles = [last.post_attention_layernorm.register_forward_pre_hook(keep("mlp")),
               tiny_llama.model.norm.register_forward_pre_hook(keep("final"))]
    batch = lm.encode(PROMPTS[0])
    embeds = lm.adapter.embed(batch.input_ids).requires_grad_(True)
    try:
        with lrp_rules(tiny_llama), lm.adapter.frozen_weights():
            logit = lm.adapter.forward(embeds, batch, attentions=False).logits[0, 5]
            logit.backward()
    finally:
        for h in handles:
            h.remove()
    for name in ("mlp", "final"):
        total = (kept[name] * kept[name].grad).sum()
        torch.testing.assert_close(total, logit.detach(), rtol=1e-5, atol=1e-6)


def test_model_unchanged_and_hooks_removed_even_on_error(tiny_lm):
    model = tiny_lm.adapter.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    impl = model.config._attn_implementation
    hooks = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()]  # transformers' own
    tiny_lm.explain(PROMPTS[0], method="tattr")
    with pytest.raises(RuntimeError, match="boom"), lrp_rules(model):
        raise RuntimeError("boom")
    from transformers import AttentionInterface

    assert model.config._attn_implementation == impl
    assert not any(k.startswith("attngrad_attnlrp") for k in AttentionInterface._global_mapping)
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in model.modules()] == hooks
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.requires_grad for p in model.parameters())


def test_generation_and_unknown_family(tiny_lm):
    gen = tiny_lm.explain_generation(PROMPTS[2], max_new_tokens=2, method="attnlrp")
    assert gen.matrix.shape[0] == len(gen.generated) and torch.isfinite(gen.matrix[0, :2]).all()
    from attngrad.errors import AttngradError
    from attngrad.lm.attnlrp import family

    class Other(torch.nn.Module):
        config = type("C", (), {"model_type": "falcon"})()

    with pytest.raises(AttngradError, match="attnlrp and tattr know the gpt2, llama, mistral, qwen2 families"):
        family(Other())
