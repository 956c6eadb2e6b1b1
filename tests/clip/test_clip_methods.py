"""CLIP towers against an independent computation written here.

The reference takes ONE image and ONE text at a time (no padding), runs Hugging Face's own
``CLIPModel`` towers (``get_text_features`` pools at the end-of-text token itself), takes every
layer's ``A(l)`` and ``grad A(l)`` of the cosine with autograd, and forms the rollout rules by
loops over layers and heads (method.md). The explainer is run batched (images x texts, texts of
different lengths padded together).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attngrad import AttngradError
from attngrad.clip import CLIP_METHODS

from .conftest import SEP, TEXTS

WEIGHTS = {
    "rollout": lambda a, g: a,
    "rollout_eq1": lambda a, g: a,
    "gae": lambda a, g: (g * a).clamp(min=0),
    "complete": lambda a, g: g * a,
    "absolute": lambda a, g: g.abs() * a,
}
RENORM = {"rollout"}


def _ids(tokenizer, text):
    return tokenizer(text, return_tensors="pt")["input_ids"]


def reference_pass(model, tokenizer, pixel, text, tower):
    """cos(image, text) for one pair; A(l) (H, N, N) and grad A(l) of the explained tower; the read row."""
    ids = _ids(tokenizer, text)
    if tower == "image":
        out = model.vision_model(pixel_values=pixel[None], output_attentions=True)
        emb = model.visual_projection(out.pooler_output)[0]
        with torch.no_grad():
            other = model.get_text_features(input_ids=ids).pooler_output[0]
        row = 0
    else:
        out = model.text_model(input_ids=ids, output_attentions=True)
        emb = model.text_projection(out.pooler_output)[0]
        with torch.no_grad():
            other = model.get_image_features(pixel_values=pixel[None]).pooler_output[0]
        row = ids[0].tolist().index(SEP)
    cos = F.cosine_similarity(emb, other, dim=0)
    attentions = [a[0] for a in out.attentions]
    grads = torch.autograd.grad(cos, out.attentions)
    return cos.detach(), [a.detach() for a in attentions], [g[0] for g in grads], row


def reference_rollout(attentions, grads, weight, row, renorm):
    """R = I; for each layer: Abar = I + mean_h w(A_h, G_h) (rows renormalised if asked); R = Abar R."""
    n = attentions[0].shape[-1]
    r = torch.eye(n, dtype=attentions[0].dtype)
    for a, g in zip(attentions, grads):
        mix = torch.zeros(n, n, dtype=a.dtype)
        for h in range(a.shape[0]):
            mix += weight(a[h], g[h]) / a.shape[0]
        abar = torch.eye(n, dtype=a.dtype) + mix
        if renorm:
            abar = abar / abar.sum(dim=1, keepdim=True)
        r = abar @ r
    return r[row]


def reference_map(model, tokenizer, pixel, text, tower, method):
    cos, attentions, grads, row = reference_pass(model, tokenizer, pixel, text, tower)
    if method in WEIGHTS:
        scores = reference_rollout(attentions, grads, WEIGHTS[method], row, method in RENORM)
    elif method == "raw_attention":
        scores = sum(attentions[-1][h, row] for h in range(attentions[-1].shape[0])) / attentions[-1].shape[0]
    elif method == "attn_gradcam":
        a, g = attentions[-1], grads[-1]
        total = torch.zeros(a.shape[-1], dtype=a.dtype)
        for h in range(a.shape[0]):
            total += g[h, row, 1:].mean() * a[h, row] / a.shape[0]
        scores = total.clamp(min=0)
    else:
        raise KeyError(method)
    if tower == "image":
        return cos, scores[1:].reshape(4, 4)
    ids = _ids(tokenizer, text)[0]
    content = (ids != SEP) & (ids != 2)
    return cos, scores * content


ROLLOUT_LIKE = ["complete", "gae", "absolute", "rollout", "rollout_eq1", "raw_attention"]


@pytest.mark.parametrize("method", ROLLOUT_LIKE + ["attn_gradcam"])
def test_image_tower_matches_reference(clip_explainer, tiny_clip, tokenizer, pixels, method):
    res = clip_explainer.explain(pixels, TEXTS, method=method, tower="image")
    assert res.maps.shape == (2, 3, 4, 4)
    for b in range(2):
        for k, text in enumerate(TEXTS):
            cos, ref = reference_map(tiny_clip, tokenizer, pixels[b], text, "image", method)
            torch.testing.assert_close(res.similarity[b, k], cos, rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(res.maps[b, k], ref, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("method", ROLLOUT_LIKE)
def test_text_tower_reads_eos_and_matches_reference(clip_explainer, tiny_clip, tokenizer, pixels, method):
    res = clip_explainer.explain(pixels, TEXTS, method=method, tower="text")
    n = res.maps.shape[-1]
    for b in range(2):
        for k, text in enumerate(TEXTS):
            cos, ref = reference_map(tiny_clip, tokenizer, pixels[b], text, "text", method)
            torch.testing.assert_close(res.similarity[b, k], cos, rtol=1e-9, atol=1e-12)
            padded = torch.zeros(n, dtype=ref.dtype)
            padded[: ref.shape[0]] = ref
            torch.testing.assert_close(res.maps[b, k], padded, rtol=1e-7, atol=1e-10)


def test_text_map_is_not_the_first_token_row(clip_explainer, tiny_clip, tokenizer, pixels):
    """Reading row 0 (the start token) instead of the end-of-text token would give another map."""
    _, attentions, grads, row = reference_pass(tiny_clip, tokenizer, pixels[0], TEXTS[1], "text")
    at_eos = reference_rollout(attentions, grads, WEIGHTS["complete"], row, False)
    at_start = reference_rollout(attentions, grads, WEIGHTS["complete"], 0, False)
    assert row > 0 and not torch.allclose(at_eos[1:row], at_start[1:row])


@pytest.mark.parametrize("tower", ["image", "text"])
def test_batched_equals_one_by_one(clip_explainer, pixels, tower):
    methods = [m for m in CLIP_METHODS if not (tower == "text" and m == "attn_gradcam")]
    together = clip_explainer.explain_methods(pixels, TEXTS, methods, tower=tower)
    for b in range(2):
        for k, text in enumerate(TEXTS):
            alone = clip_explainer.explain_methods(pixels[b : b + 1], [text], methods, tower=tower)
            for m in methods:
                got = together[m].maps[b, k]
                want = alone[m].maps[0, 0]
                if tower == "text":
                    got = got[: want.shape[-1]]
                    assert together[m].maps[b, k, want.shape[-1] :].abs().max() == 0 if got.shape[-1] < together[m].maps.shape[-1] else True
                torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_zero_shot_and_similarity(clip_explainer, tiny_clip, tokenizer, pixels):
    sim = clip_explainer.similarity(pixels, TEXTS)
    ids = tokenizer(TEXTS, padding=True, return_tensors="pt")
    out = tiny_clip(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], pixel_values=pixels)
    torch.testing.assert_close(sim * tiny_clip.logit_scale.exp(), out.logits_per_image)
    probs = clip_explainer.zero_shot(pixels, TEXTS)
    torch.testing.assert_close(probs, out.logits_per_image.softmax(dim=-1))


def test_contrast_loss_explains_the_difference(clip_explainer, tiny_clip, tokenizer, pixels):
    """diff(text 0, text 1) on the image tower is the map of cos0 - cos1 (linear in the gradient)."""
    res = clip_explainer.explain(pixels[:1], TEXTS[:2], method="complete", loss="diff", contrast=1)
    _, a0, g0, _ = reference_pass(tiny_clip, tokenizer, pixels[0], TEXTS[0], "image")
    _, _, g1, _ = reference_pass(tiny_clip, tokenizer, pixels[0], TEXTS[1], "image")
    want = reference_rollout(a0, [x - y for x, y in zip(g0, g1)], WEIGHTS["complete"], 0, False)[1:].reshape(4, 4)
    torch.testing.assert_close(res.maps[0, 0], want, rtol=1e-7, atol=1e-10)


def test_mistakes_raise_clear_errors(clip_explainer, pixels):
    with pytest.raises(AttngradError, match="tower"):
        clip_explainer.explain(pixels, TEXTS, tower="audio")
    with pytest.raises(AttngradError, match="not defined for CLIP"):
        clip_explainer.explain(pixels, TEXTS, method="tattr")
    with pytest.raises(AttngradError, match="padding"):
        clip_explainer.explain(pixels, TEXTS, method="attn_gradcam", tower="text")
    with pytest.raises(AttngradError, match="contrast"):
        clip_explainer.explain(pixels, TEXTS, loss="diff")
    with pytest.raises(AttngradError, match="not one of the texts"):
        clip_explainer.explain(pixels, TEXTS, loss="diff", contrast="a horse")
    with pytest.raises(AttngradError, match="tower='image'"):
        clip_explainer.explain(pixels, TEXTS, loss="diff", contrast=1, tower="text")
    with pytest.raises(AttngradError, match="empty"):
        clip_explainer.explain(pixels, ["  "])
    with pytest.raises(AttngradError, match="limit"):
        clip_explainer.explain(pixels, ["a photo of a zebra " * 10])


def test_non_clip_models_are_refused(tiny_clip, tokenizer):
    from transformers import BertConfig, BertModel

    from attngrad.clip import ClipExplainer, from_hf_clip

    with pytest.raises(AttngradError, match="from_hf_clip"):
        ClipExplainer(tiny_clip)
    bert = BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32))
    with pytest.raises(AttngradError, match="not a Hugging Face CLIPModel"):
        from_hf_clip(bert, tokenizer)
