"""raw_attention and attn_gradcam against loops over heads written from method.md."""

from __future__ import annotations

import torch

from .test_rollout import reference_forward


def test_raw_attention_is_last_layer_head_mean_cls_row(tiny_explainer, tiny_pixels):
    res = tiny_explainer.explain(tiny_pixels, method="raw_attention")
    for i in range(3):
        _, attns = reference_forward(tiny_explainer.adapter.model, tiny_pixels[i : i + 1])
        last = attns[-1]
        expected = sum(last[h, 0, 1:] for h in range(last.shape[0])) / last.shape[0]
        torch.testing.assert_close(res.maps[i].flatten(), expected.detach(), rtol=1e-5, atol=1e-7)


def test_attn_gradcam_follows_chefer_baseline(tiny_explainer, tiny_pixels):
    targets = [1, 2, 3]
    res = tiny_explainer.explain(tiny_pixels, target=targets, method="attn_gradcam")
    for i, t in enumerate(targets):
        logits, attns = reference_forward(tiny_explainer.adapter.model, tiny_pixels[i : i + 1])
        grad = torch.autograd.grad(logits[t], attns[-1])[0]
        heads = attns[-1].shape[0]
        cam = torch.zeros(16)
        for h in range(heads):
            w_h = grad[h, 0, 1:].mean()
            cam += w_h * attns[-1][h, 0, 1:].detach() / heads
        torch.testing.assert_close(res.maps[i].flatten(), cam.clamp(min=0), rtol=1e-4, atol=1e-7)
    assert (res.maps >= 0).all()
