"""Text maps against an independent computation written from method.md, on tiny random BERTs.

The reference runs the Hugging Face model on ONE text, unpadded, takes ``grad A(l)`` of
the loss written here, and builds ``R = prod_l (I + E_H(w ⊙ A(l)))`` with loops over
layers and heads as full matrices; the explainer runs a padded batch of texts of
different lengths. Equal maps mean the equations are right and padding is handled.
"""

from __future__ import annotations

import pytest
import torch

from attngrad.errors import AttngradError
from attngrad.text import TextExplainer

TEXTS = ["the cat sat on a mat", "how do i fix a flat bike tire ?", "my team won"]
AGAINST = ["a dog sat on my car", "my car is flat and i need a new wheel .", "the team won the game"]

WEIGHTS = {  # w(A, G) per head, from the table in method.md
    "rollout": lambda a, g: a,
    "rollout_eq1": lambda a, g: a,
    "gae": lambda a, g: torch.clamp(g * a, min=0),
    "complete": lambda a, g: g * a,
    "absolute": lambda a, g: g.abs() * a,
}
RENORMALIZE = {"rollout": True}


def run_single(model, tokenizer, text):
    """The model on one unpadded text: (outputs, attentions, ids)."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    out = model(inputs_embeds=embeds, output_attentions=True)
    return out, out.attentions, ids[0]


def rollout_reference(attentions, grads, method, read, start_layer=0):
    """Full-matrix product of ``I + E_H(w ⊙ A)`` over layers; the CLS row or mean_i (R - I)[i, :]."""
    n = attentions[0].shape[-1]
    eye = torch.eye(n, dtype=attentions[0].dtype)
    R = eye.clone()
    for layer in range(start_layer, len(attentions)):
        A, G = attentions[layer][0].detach(), grads[layer][0]
        heads = A.shape[0]
        mix = torch.zeros(n, n, dtype=A.dtype)
        for h in range(heads):
            mix += WEIGHTS[method](A[h], G[h]) / heads
        abar = eye + mix
        if RENORMALIZE.get(method):
            abar = abar / abar.sum(dim=1, keepdim=True)
        R = abar @ R
    row = R[0] if read == "cls" else (R - eye).mean(dim=0)
    return row[1:-1]  # scored tokens: without [CLS] and [SEP]


def mean_pool(hidden):
    return hidden[0].mean(dim=0)


def cosine(a, b):
    return torch.dot(a, b) / (a.norm() * b.norm())


def assert_map(res, i, expected):
    """Scored positions equal ``expected``; [CLS], [SEP] and padding are 0."""
    n = len(res.encoded.tokens[i])
    torch.testing.assert_close(res.maps[i, 1 : n - 1], expected.detach(), rtol=1e-7, atol=1e-12)
    assert (res.maps[i, 0] == 0) and (res.maps[i, n - 1 :] == 0).all()


@pytest.fixture(scope="module")
def classifier_explainer(tiny_classifier, tiny_tokenizer):
    return TextExplainer(tiny_classifier, tiny_tokenizer)


@pytest.fixture(scope="module")
def encoder_explainer(tiny_encoder, tiny_tokenizer):
    return TextExplainer(tiny_encoder, tiny_tokenizer, pooling="mean")


@pytest.mark.parametrize("method", list(WEIGHTS))
def test_classification_label_matches_reference_on_padded_batch(classifier_explainer, tiny_classifier, tiny_tokenizer, method):
    res = classifier_explainer.explain(TEXTS, target="repair", method=method)
    assert res.maps.shape == (3, len(tiny_tokenizer(TEXTS[1])["input_ids"]))
    assert res.target_names == ["repair"] * 3
    for i, text in enumerate(TEXTS):
        out, attns, _ = run_single(tiny_classifier, tiny_tokenizer, text)
        grads = torch.autograd.grad(out.logits[0, 2], attns)
        torch.testing.assert_close(res.logits[i], out.logits[0].detach())
        assert_map(res, i, rollout_reference(attns, grads, method, "cls"))


def test_classification_normdiff_and_start_layer(classifier_explainer, tiny_classifier, tiny_tokenizer):
    res = classifier_explainer.explain(TEXTS, target="top1", loss="normdiff", contrast="top2", start_layer=1)
    for i, text in enumerate(TEXTS):
        out, attns, _ = run_single(tiny_classifier, tiny_tokenizer, text)
        t1, t2 = out.logits[0].argsort(descending=True)[:2].tolist()
        assert (res.targets[i].item(), res.contrasts[i].item()) == (t1, t2)
        loss = (out.logits[0, t1] - out.logits[0, t2]) / out.logits[0, t1]
        grads = torch.autograd.grad(loss, attns)
        assert_map(res, i, rollout_reference(attns, grads, "complete", "cls", start_layer=1))


def test_raw_attention_is_last_layer_head_mean_cls_row(classifier_explainer, tiny_classifier, tiny_tokenizer):
    res = classifier_explainer.explain(TEXTS, method="raw_attention")
    for i, text in enumerate(TEXTS):
        _, attns, _ = run_single(tiny_classifier, tiny_tokenizer, text)
        last = attns[-1][0].detach()
        expected = sum(last[h, 0] for h in range(last.shape[0])) / last.shape[0]
        assert_map(res, i, expected[1:-1])


@pytest.mark.parametrize("method", ["complete", "gae", "rollout", "absolute"])
def test_similarity_mean_pooled_matches_reference_both_directions(encoder_explainer, tiny_encoder, tiny_tokenizer, method):
    res = encoder_explainer.explain(TEXTS, against=AGAINST, method=method)
    assert res.reverse is not None and res.reverse.texts == AGAINST and res.against == AGAINST
    for i, (a, b) in enumerate(zip(TEXTS, AGAINST)):
        for text, other, result in ((a, b, res), (b, a, res.reverse)):
            with torch.no_grad():
                e_other = mean_pool(run_single(tiny_encoder, tiny_tokenizer, other)[0].last_hidden_state)
            out, attns, _ = run_single(tiny_encoder, tiny_tokenizer, text)
            sim = cosine(mean_pool(out.last_hidden_state), e_other)
            grads = torch.autograd.grad(sim, attns)
            torch.testing.assert_close(result.logits[i, 0], sim.detach())
            assert_map(result, i, rollout_reference(attns, grads, method, "pooled"))


def test_similarity_one_text_against_many(encoder_explainer):
    res = encoder_explainer.explain(TEXTS, against=AGAINST[0])
    assert res.reverse.texts == [AGAINST[0]] * 3
    singles = [encoder_explainer.explain(t, against=AGAINST[0]) for t in TEXTS]
    for i, single in enumerate(singles):
        n = len(single.encoded.tokens[0])
        torch.testing.assert_close(res.maps[i, :n], single.maps[0, :n], rtol=1e-7, atol=1e-12)
        assert (res.maps[i, n:] == 0).all() and (single.maps[0, n:] == 0).all()


def test_cls_pooled_encoder_reads_cls_row(tiny_encoder, tiny_tokenizer):
    explainer = TextExplainer(tiny_encoder, tiny_tokenizer, pooling="cls")
    res = explainer.explain(TEXTS[:2], against=AGAINST[:2], method="complete")
    for i in range(2):
        with torch.no_grad():
            e_b = run_single(tiny_encoder, tiny_tokenizer, AGAINST[i])[0].last_hidden_state[0, 0]
        out, attns, _ = run_single(tiny_encoder, tiny_tokenizer, TEXTS[i])
        grads = torch.autograd.grad(cosine(out.last_hidden_state[0, 0], e_b), attns)
        assert_map(res, i, rollout_reference(attns, grads, "complete", "cls"))


def test_zero_shot_top_label_and_runner_up(encoder_explainer, tiny_encoder, tiny_tokenizer):
    labels = ["team game", "bank money", "fix tire"]
    res = encoder_explainer.explain(TEXTS, labels=",".join(labels), loss="normdiff", contrast="top2")
    with torch.no_grad():
        label_emb = [mean_pool(run_single(tiny_encoder, tiny_tokenizer, d)[0].last_hidden_state) for d in labels]
    for i, text in enumerate(TEXTS):
        out, attns, _ = run_single(tiny_encoder, tiny_tokenizer, text)
        e = mean_pool(out.last_hidden_state)
        sims = torch.stack([cosine(e, emb) for emb in label_emb])
        t1, t2 = sims.argsort(descending=True)[:2].tolist()
        assert res.target_names[i] == labels[t1] and res.contrast_names[i] == labels[t2]
        torch.testing.assert_close(res.logits[i], sims.detach())
        grads = torch.autograd.grad((sims[t1] - sims[t2]) / sims[t1], attns)
        assert_map(res, i, rollout_reference(attns, grads, "complete", "pooled"))


def test_signs_complete_has_both_gae_is_nonnegative(classifier_explainer, encoder_explainer):
    for explainer, kwargs in ((classifier_explainer, {}), (encoder_explainer, {"against": AGAINST})):
        res = explainer.explain_methods(TEXTS, ["complete", "gae"], **kwargs)
        assert (res["complete"].maps > 0).any() and (res["complete"].maps < 0).any()
        assert (res["gae"].maps >= 0).all() and (res["gae"].maps > 0).any()


def test_padded_batch_equals_unpadded_singles(classifier_explainer, encoder_explainer):
    for explainer, kwargs in ((classifier_explainer, {"target": "finance"}), (encoder_explainer, {"labels": "sports,money,repair"})):
        batch = explainer.explain_methods(TEXTS, ["complete", "gae", "rollout"], **kwargs)
        for i, text in enumerate(TEXTS):
            single = explainer.explain_methods(text, ["complete", "gae", "rollout"], **kwargs)
            for name, res in single.items():
                n = res.maps.shape[1]
                assert n == len(batch[name].encoded.tokens[i])
                torch.testing.assert_close(batch[name].maps[i, :n], res.maps[0], rtol=1e-7, atol=1e-12)


def test_one_forward_per_batch_for_all_methods(encoder_explainer, tiny_encoder):
    calls = []
    handle = tiny_encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        encoder_explainer.explain_methods(TEXTS, ["complete", "gae", "rollout", "absolute", "random"], against=AGAINST)
    finally:
        handle.remove()
    assert len(calls) == 1


def test_methods_not_defined_on_text_are_refused(classifier_explainer, encoder_explainer):
    with pytest.raises(AttngradError, match="not defined on text"):
        classifier_explainer.explain(TEXTS, method="attn_gradcam")
    with pytest.raises(AttngradError, match="not defined on text"):  # relevance propagation of image models
        classifier_explainer.explain(TEXTS, method="tattr")
    with pytest.raises(AttngradError, match="pools every token"):
        encoder_explainer.explain(TEXTS, against=AGAINST, method="raw_attention")
    with pytest.raises(AttngradError, match="unknown method"):
        classifier_explainer.explain(TEXTS, method="nope")


@pytest.mark.parametrize("loss", ["normdiff", "diff", "ratio"])
def test_contrast_equal_to_target_is_refused_on_text(classifier_explainer, encoder_explainer, loss):
    with pytest.raises(AttngradError, match="the contrast equals the target"):
        classifier_explainer.explain(TEXTS, target="repair", contrast="repair", loss=loss)
    with pytest.raises(AttngradError, match="the contrast equals the target"):
        encoder_explainer.explain(TEXTS, labels="sports,finance,repair", target="top1", contrast="top1", loss=loss)


def test_contrast_with_the_logit_loss_is_refused_on_text(classifier_explainer, encoder_explainer):
    """logit never reads the contrast: the map would be the one-label map, not the comparison asked for."""
    with pytest.raises(AttngradError, match="a contrast class needs a two-class loss"):
        classifier_explainer.explain(TEXTS, target="repair", contrast="sports")
    with pytest.raises(AttngradError, match="a contrast class needs a two-class loss"):
        encoder_explainer.explain(TEXTS, labels="sports,finance,repair", contrast="top2")


def test_start_layer_reaches_text_methods_that_take_it(classifier_explainer):
    res = classifier_explainer.explain_methods(TEXTS, ["complete", "raw_attention"], target="repair", start_layer=1)
    alone = classifier_explainer.explain(TEXTS, target="repair", start_layer=1)
    torch.testing.assert_close(res["complete"].maps, alone.maps)
    assert classifier_explainer.method("complete", start_layer=1).start_layer == 1
