"""The rollout family against an independent computation from the equations.

The test writes its own forward pass of the tiny ViT (embeddings, pre-norm blocks,
softmax attention, MLP, classifier) from the model's weights, takes every
layer's attention and its gradient with autograd for ONE image, and forms
``R = R + E_H(w ⊙ A(l)) · R`` (or the renormalised product) by loops over
layers and heads, as method.md states it.
"""

from __future__ import annotations

import math

import pytest
import torch

from attngrad import AttngradError
from attngrad.methods import METHODS, rollout


def reference_forward(model, pixels):
    """An independent ViT forward for one image (1, 3, H, W); returns logits (C,) and A(l) (H, N, N)."""
    cfg = model.config
    vit = model.vit
    emb = vit.embeddings
    x = torch.nn.functional.conv2d(pixels, emb.patch_embeddings.projection.weight, emb.patch_embeddings.projection.bias,
                                   stride=cfg.patch_size)
    x = x.flatten(2).transpose(1, 2)[0]  # (P, D)
    x = torch.cat([emb.cls_token[0], x]) + emb.position_embeddings[0]
    heads, d = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    attentions = []
    layers = vit.layers if hasattr(vit, "layers") else vit.encoder.layer
    for layer in layers:
        att = layer.attention
        h = torch.nn.functional.layer_norm(x, (cfg.hidden_size,), layer.layernorm_before.weight,
                                           layer.layernorm_before.bias, cfg.layer_norm_eps)
        q = (h @ att.q_proj.weight.T + att.q_proj.bias).view(-1, heads, d).transpose(0, 1)
        k = (h @ att.k_proj.weight.T + att.k_proj.bias).view(-1, heads, d).transpose(0, 1)
        v = (h @ att.v_proj.weight.T + att.v_proj.bias).view(-1, heads, d).transpose(0, 1)
        a = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1)
        attentions.append(a)
        o = (a @ v).transpose(0, 1).reshape(-1, cfg.hidden_size)
        x = x + o @ att.o_proj.weight.T + att.o_proj.bias
        h = torch.nn.functional.layer_norm(x, (cfg.hidden_size,), layer.layernorm_after.weight,
                                           layer.layernorm_after.bias, cfg.layer_norm_eps)
        h = torch.nn.functional.gelu(h @ layer.mlp.fc1.weight.T + layer.mlp.fc1.bias)
        x = x + h @ layer.mlp.fc2.weight.T + layer.mlp.fc2.bias
    x = torch.nn.functional.layer_norm(x, (cfg.hidden_size,), vit.layernorm.weight, vit.layernorm.bias, cfg.layer_norm_eps)
    logits = x[0] @ model.classifier.weight.T + model.classifier.bias
    return logits, attentions


WEIGHTS = {
    "rollout": lambda a, g: a,
    "rollout_eq1": lambda a, g: a,
    "gae": lambda a, g: (g * a).clamp(min=0),
    "complete": lambda a, g: g * a,
    "absolute": lambda a, g: g.abs() * a,
}


def reference_map(model, pixels, target, method, start_layer=0):
    logits, attns = reference_forward(model, pixels)
    grads = torch.autograd.grad(logits[target], attns)
    n = attns[0].shape[-1]
    heads = attns[0].shape[0]
    r = torch.eye(n)
    for layer in range(start_layer, len(attns)):
        mix = torch.zeros(n, n)
        for h in range(heads):
            mix += WEIGHTS[method](attns[layer][h], grads[layer][h]) / heads
        if method == "rollout":  # Abnar & Zuidema / Chefer: renormalise rows of I + E_H A
            abar = torch.eye(n) + mix
            r = (abar / abar.sum(dim=1, keepdim=True)) @ r
        else:  # eq. 1 / GAE: R <- R + Abar R
            r = r + mix @ r
    side = int(math.isqrt(n - 1))
    return r[0, 1:].reshape(side, side)


@pytest.mark.parametrize("method", list(WEIGHTS))
def test_matches_equation_per_image(tiny_explainer, tiny_pixels, method):
    targets = torch.tensor([2, 0, 4])
    res = tiny_explainer.explain(tiny_pixels, target=targets, method=method)
    assert res.maps.shape == (3, 4, 4)
    for i in range(3):
        expected = reference_map(tiny_explainer.adapter.model, tiny_pixels[i : i + 1], int(targets[i]), method)
        torch.testing.assert_close(res.maps[i], expected, rtol=1e-4, atol=1e-6)


def test_start_layer(tiny_explainer, tiny_pixels):
    res = tiny_explainer.explain(tiny_pixels[:1], target=1, method="complete", start_layer=1)
    expected = reference_map(tiny_explainer.adapter.model, tiny_pixels[:1], 1, "complete", start_layer=1)
    torch.testing.assert_close(res.maps[0], expected, rtol=1e-4, atol=1e-6)
    full = tiny_explainer.explain(tiny_pixels[:1], target=1, method="complete").maps[0]
    assert not torch.allclose(full, res.maps[0])
    with pytest.raises(AttngradError, match=r"complete: start_layer 3 is out of range; this model has layers 0\.\.2"):
        tiny_explainer.explain(tiny_pixels[:1], start_layer=3)
    with pytest.raises(AttngradError, match=r"rollout: start_layer -1 is out of range"):
        tiny_explainer.explain(tiny_pixels[:1], method="rollout", start_layer=-1)


@pytest.mark.parametrize("method", ["complete", "gae", "absolute"])
def test_a_gradient_method_refuses_a_trace_without_gradients(tiny_explainer, tiny_pixels, method):
    from attngrad.methods import get_method

    bare = tiny_explainer.trace(tiny_pixels[:1], target=1, methods=[get_method("rollout")])
    assert bare.gradients is None
    with pytest.raises(AttngradError, match=f"{method}: the trace has no attention gradients"):
        get_method(method)(bare)


def test_signs(tiny_explainer, tiny_pixels):
    """gae, absolute and rollout are non-negative; complete has both signs."""
    res = tiny_explainer.explain_methods(tiny_pixels, ["gae", "complete", "absolute", "rollout"], target=3)
    assert (res["gae"].maps >= 0).all()
    assert (res["absolute"].maps >= 0).all()
    assert (res["rollout"].maps > 0).all()
    assert (res["complete"].maps < 0).any() and (res["complete"].maps > 0).any()


def test_rollout_eq1_is_renormalised_rollout_times_2_pow_L(tiny_explainer, tiny_pixels):
    res = tiny_explainer.explain_methods(tiny_pixels, ["rollout", "rollout_eq1"])
    layers = tiny_explainer.adapter.model.config.num_hidden_layers
    torch.testing.assert_close(res["rollout_eq1"].maps, res["rollout"].maps * 2**layers)


def test_batched_equals_single(tiny_explainer, tiny_pixels):
    for method in ("complete", "gae", "rollout", "raw_attention", "attn_gradcam"):
        batch = tiny_explainer.explain(tiny_pixels, target="top1", method=method).maps
        singles = torch.cat([tiny_explainer.explain(tiny_pixels[i : i + 1], method=method).maps for i in range(3)])
        torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-7)


def test_engine_row_equals_full_product():
    """The row-vector engine equals the full matrix product of eq. 1, for both variants."""
    torch.manual_seed(3)
    mixes = [torch.randn(2, 5, 5) for _ in range(4)]
    for renorm in (False, True):
        full = torch.eye(5).expand(2, 5, 5)
        for m in mixes:
            abar = m + torch.eye(5)
            if renorm:
                abar = abar / abar.sum(-1, keepdim=True)
            full = abar @ full
        for token in (0, 2):
            torch.testing.assert_close(rollout(mixes, token, renorm), full[:, token], rtol=1e-5, atol=1e-5)


def test_registry_has_the_family():
    assert {"rollout", "rollout_eq1", "gae", "complete", "absolute", "raw_attention", "attn_gradcam"} <= set(METHODS)
