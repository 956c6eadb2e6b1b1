"""Every method on tiny random Llama (GQA) and GPT-2 models against the independent computation in reference.py."""

from __future__ import annotations

import pytest
import torch

from attngrad.lm import LMExplainer

from .reference import reference

PROMPTS = ["the capital of france is", "a cat sat on the mat and", "it was"]
ROLLOUT_METHODS = ["complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention", "grad_x_input"]


def _ids(lm, prompt):
    return lm.adapter.tokenize(prompt)


def test_gqa_model_has_fewer_kv_heads(tiny_llama):
    cfg = tiny_llama.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads


@pytest.mark.parametrize("method", ROLLOUT_METHODS)
def test_logit_loss_matches_reference(tiny_lm, method):
    res = tiny_lm.explain(PROMPTS[0], method=method, target=" paris")
    target = _ids(tiny_lm, "paris")[0]
    want = reference(tiny_lm.adapter.model, _ids(tiny_lm, PROMPTS[0]), method, target)
    assert int(res.targets[0]) == target
    got = res.scores(0)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert want.abs().max() > 1e-5  # not trivially zero


@pytest.mark.parametrize("loss", ["diff", "normdiff"])
@pytest.mark.parametrize("method", ["complete", "gae", "absolute", "grad_x_input"])
def test_contrast_losses_match_reference(tiny_lm, method, loss):
    ids = _ids(tiny_lm, PROMPTS[1])
    t, c = _ids(tiny_lm, "dog")[0], _ids(tiny_lm, "park")[0]
    res = tiny_lm.explain(PROMPTS[1], method=method, target="dog", contrast="park", loss=loss)
    want = reference(tiny_lm.adapter.model, ids, method, t, c, loss)
    torch.testing.assert_close(res.scores(0), want, rtol=1e-4, atol=1e-6)


def test_default_target_is_greedy_token_and_start_layer(tiny_lm):
    ids = _ids(tiny_lm, PROMPTS[0])
    with torch.no_grad():
        greedy = int(tiny_lm.adapter.model(torch.tensor([ids])).logits[0, -1].argmax())
    res = tiny_lm.explain(PROMPTS[0], method="complete", start_layer=1)
    assert int(res.targets[0]) == greedy
    torch.testing.assert_close(res.scores(0), reference(tiny_lm.adapter.model, ids, "complete", greedy, start_layer=1),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(res.logits[0], tiny_lm.adapter.model(torch.tensor([ids])).logits[0, -1].detach(),
                               rtol=1e-4, atol=1e-5)


def test_runner_up_contrast(tiny_lm):
    ids = _ids(tiny_lm, PROMPTS[2])
    with torch.no_grad():
        top = tiny_lm.adapter.model(torch.tensor([ids])).logits[0, -1].topk(2).indices.tolist()
    res = tiny_lm.explain(PROMPTS[2], contrast="top2", loss="diff")
    assert res.targets.tolist() == [top[0]] and res.contrasts.tolist() == [top[1]]
    torch.testing.assert_close(res.scores(0), reference(tiny_lm.adapter.model, ids, "complete", top[0], top[1], "diff"),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ROLLOUT_METHODS + ["random"])
def test_batch_with_left_padding_equals_each_alone(tiny_lm, method):
    together = tiny_lm.explain(PROMPTS, method=method, target=" paris", contrast=" rome", loss="diff")
    assert len(set(together.batch.lengths)) > 1  # really padded
    for i, prompt in enumerate(PROMPTS):
        alone = tiny_lm.explain(prompt, method=method, target=" paris", contrast=" rome", loss="diff")
        assert [t for t, _ in together.token_scores(i)] == [t for t, _ in alone.token_scores(0)]
        torch.testing.assert_close(together.scores(i), alone.scores(0), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(together.logits[i], alone.logits[0], rtol=1e-4, atol=1e-5)
        if method != "random":  # and both equal the unpadded reference
            ids = _ids(tiny_lm, prompt)
            want = reference(tiny_lm.adapter.model, ids, method, _ids(tiny_lm, "paris")[0],
                             _ids(tiny_lm, "rome")[0], "diff")
            torch.testing.assert_close(together.scores(i), want, rtol=1e-4, atol=1e-6)
    # padding columns carry no score
    pad = together.batch.attention_mask == 0
    assert together.maps[pad].abs().sum() == 0


def test_small_batches_equal_one_batch(tiny_llama, tokenizer):
    one = LMExplainer(tiny_llama, tokenizer, batch_size=16).explain_methods(PROMPTS, ["complete", "gae"])
    small = LMExplainer(tiny_llama, tokenizer, batch_size=2).explain_methods(PROMPTS, ["complete", "gae"])
    for name in one:
        torch.testing.assert_close(one[name].maps, small[name].maps, rtol=1e-4, atol=1e-6)


def test_explain_methods_share_one_pass(tiny_lm):
    many = tiny_lm.explain_methods(PROMPTS[:2], ["complete", "gae", "grad_x_input", "raw_attention"])
    for name, res in many.items():
        alone = tiny_lm.explain(PROMPTS[:2], method=name)
        torch.testing.assert_close(res.maps, alone.maps, rtol=1e-5, atol=1e-7)


def test_generation_rows_equal_prefix_explanations(tiny_lm):
    gen = tiny_lm.explain_generation(PROMPTS[0], max_new_tokens=4, method="complete")
    p = gen.prompt_length
    assert len(gen.generated) >= 1 and gen.matrix.shape == (len(gen.generated), p + len(gen.generated) - 1)
    ids = _ids(tiny_lm, PROMPTS[0])
    new = tiny_lm.generate(PROMPTS[0], max_new_tokens=4)
    for k, token in enumerate(new):
        prefix = ids + new[:k]
        with torch.no_grad():
            assert int(tiny_lm.adapter.model(torch.tensor([prefix])).logits[0, -1].argmax()) == token  # greedy
        want = reference(tiny_lm.adapter.model, prefix, "complete", token)
        torch.testing.assert_close(gen.matrix[k, : p + k], want, rtol=1e-4, atol=1e-6)
        assert torch.isnan(gen.matrix[k, p + k :]).all()
