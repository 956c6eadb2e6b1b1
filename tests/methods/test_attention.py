"""raw_attention and attn_gradcam against loops over heads written from method.md."""

from __future__ import annotations

import pytest
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


# ---------------------------------------------------------------------- the backward pass stops where methods begin


def _blocks_reached(explainer, pixels, methods):
    """The blocks whose output the shared backward pass differentiated (a gradient hook on each block's output)."""
    reached: list[int] = []
    blocks = explainer.adapter.model.vit.layers

    def watch(i):
        def hook(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            if out.requires_grad:
                out.register_hook(lambda grad: reached.append(i))
        return hook

    handles = [b.register_forward_hook(watch(i)) for i, b in enumerate(blocks)]
    try:
        trace = explainer.trace(pixels.clone(), methods=methods)
    finally:
        for h in handles:
            h.remove()
    return sorted(set(reached)), trace


def test_last_layer_methods_backpropagate_through_the_last_block_only(tiny_explainer, tiny_pixels):
    from attngrad.errors import AttngradError
    from attngrad.methods import AttentionGradCAM, Complete

    last = len(tiny_explainer.adapter.model.vit.layers) - 1
    reached, cut = _blocks_reached(tiny_explainer, tiny_pixels, [AttentionGradCAM()])
    assert reached == [last]
    full_reached, full = _blocks_reached(tiny_explainer, tiny_pixels, [AttentionGradCAM(), Complete()])
    assert full_reached == list(range(last + 1))
    torch.testing.assert_close(AttentionGradCAM()(cut), AttentionGradCAM()(full))
    with pytest.raises(AttngradError, match="stopped above layer 0"):
        Complete()(cut)  # a trace cut for the last layer cannot serve a method that reads layer 0
    reached, _ = _blocks_reached(tiny_explainer, tiny_pixels, [Complete(start_layer=1)])
    assert reached == [1, 2]
