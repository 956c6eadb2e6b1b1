"""Grad-ECLIP from its equations (last layer re-run by hand), and Attention-ECLIP equal to it.

Reference (Zhao et al., ICML 2024): re-run the image tower's last layer by hand from its
input (LayerNorm, q/k/v, per-head softmax attention, output projection, MLP, post-LayerNorm,
projection), take ``w = dS/do_cls`` at the heads' concatenated output, and form
``H_j = ReLU(sum_c w_c v_j^c lambda_j)`` with ``lambda_j`` the min-max normalised cosine of
``q_cls`` and ``k_j`` over the patches — by loops over tokens.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from .conftest import SEP, TEXTS


def reference_gradeclip(model, tokenizer, pixel, text, attention):
    vm = model.vision_model
    out = vm(pixel_values=pixel[None], output_hidden_states=True)
    x = out.hidden_states[-2][0].detach()  # input of the last layer (N, D)
    layer = vm.encoder.layers[-1]
    att = layer.self_attn
    heads, width = att.num_heads, att.embed_dim
    d = width // heads
    h = layer.layer_norm1(x)
    q = h @ att.q_proj.weight.T + att.q_proj.bias
    k = h @ att.k_proj.weight.T + att.k_proj.bias
    v = h @ att.v_proj.weight.T + att.v_proj.bias
    parts, maps = [], []
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        a = torch.softmax(q[:, sl] @ k[:, sl].T / math.sqrt(d), dim=-1)
        maps.append(a)
        parts.append(a @ v[:, sl])
    o = torch.cat(parts, dim=1).detach().requires_grad_(True)
    y = x + o @ att.out_proj.weight.T + att.out_proj.bias
    y = y + layer.mlp(layer.layer_norm2(y))
    emb = model.visual_projection(vm.post_layernorm(y[0]))
    with torch.no_grad():
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        other = model.get_text_features(input_ids=ids).pooler_output[0]
    s = F.cosine_similarity(emb, other, dim=0)
    # the hand-written layer reproduces the model's own similarity
    full = F.cosine_similarity(model.get_image_features(pixel_values=pixel[None]).pooler_output[0], other, dim=0)
    torch.testing.assert_close(s, full)
    (w,) = torch.autograd.grad(s, o)
    w = w[0]
    n = x.shape[0]
    cos = torch.stack([F.cosine_similarity(q[0], k[j], dim=0) for j in range(1, n)])
    lam = (cos - cos.min()) / (cos.max() - cos.min())
    out_map = torch.zeros(n - 1, dtype=x.dtype)
    for j in range(1, n):
        total = 0.0
        for c in range(width):
            weight = {"loosened": lam[j - 1], "none": 1.0, "softmax": maps[c // d][0, j]}[attention]
            total = total + w[c] * v[j, c] * weight
        out_map[j - 1] = max(float(total.detach()), 0.0)
    return out_map.reshape(4, 4)


@pytest.mark.parametrize("attention", ["loosened", "softmax", "none"])
def test_gradeclip_matches_its_equations(clip_explainer, tiny_clip, tokenizer, pixels, attention):
    from attngrad.clip import GradEclip

    res = clip_explainer.explain(pixels, TEXTS[:2], method=GradEclip(attention=attention))
    for b in range(2):
        for k in range(2):
            want = reference_gradeclip(tiny_clip, tokenizer, pixels[b], TEXTS[k], attention)
            # Hugging Face's eager attention takes its softmax in float32, the hand-written layer in float64
            torch.testing.assert_close(res.maps[b, k], want, rtol=1e-5, atol=1e-8)
    assert (res.maps > 0).any() and (res.maps == 0).any()  # the ReLU acts: not trivially all-positive


@pytest.mark.parametrize("tower", ["image", "text"])
@pytest.mark.parametrize("attention", ["loosened", "softmax", "none"])
def test_attention_eclip_equals_gradeclip(clip_explainer, pixels, tower, attention):
    from attngrad.clip import AttentionEclip, GradEclip

    res = clip_explainer.explain_methods(pixels, TEXTS, [GradEclip(attention=attention), AttentionEclip(attention=attention)],
                                         tower=tower)
    grad, attn = res["gradeclip"].maps, res["attention_eclip"].maps
    assert grad.abs().max() > 0
    torch.testing.assert_close(attn, grad, rtol=1e-9, atol=1e-12)


def test_default_names_agree_and_differ_from_complete(clip_explainer, pixels):
    res = clip_explainer.explain_methods(pixels, TEXTS, ["gradeclip", "attention_eclip", "complete"])
    torch.testing.assert_close(res["attention_eclip"].maps, res["gradeclip"].maps, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(res["gradeclip"].maps, res["complete"].maps.clamp(min=0))


def test_text_tower_gradeclip_scores_content_tokens_only(clip_explainer, tokenizer, pixels):
    res = clip_explainer.explain(pixels, TEXTS, method="gradeclip", tower="text")
    for k, text in enumerate(TEXTS):
        ids = tokenizer(text)["input_ids"]
        eos = ids.index(SEP)
        assert (res.maps[:, k, 0] == 0).all() and (res.maps[:, k, eos:] == 0).all()
        assert (res.maps[:, k, 1:eos] >= 0).all()


def test_unknown_attention_weight_raises():
    from attngrad import AttngradError
    from attngrad.clip import GradEclip

    with pytest.raises(AttngradError, match="loosened"):
        GradEclip(attention="sparse")


def test_text_tower_eclip_reads_the_end_of_text_row(clip_explainer, tiny_clip, tokenizer, pixels):
    """attention_eclip(none) on the text tower = ReLU(sum_h grad A^h(L)[eos, j]) of the pair alone."""
    from attngrad.clip import AttentionEclip

    from .test_clip_methods import reference_pass

    res = clip_explainer.explain(pixels, TEXTS, method=AttentionEclip(attention="none"), tower="text")
    for b in range(2):
        for k, text in enumerate(TEXTS):
            _, _, grads, row = reference_pass(tiny_clip, tokenizer, pixels[b], text, "text")
            g = grads[-1]
            want = torch.zeros(g.shape[-1], dtype=g.dtype)
            for j in range(1, row):
                want[j] = max(float(sum(g[h, row, j] for h in range(g.shape[0]))), 0.0)
            torch.testing.assert_close(res.maps[b, k, : g.shape[-1]], want, rtol=1e-7, atol=1e-10)
            assert res.maps[b, k, g.shape[-1] :].abs().sum() == 0
