"""Attention transfer: the override reproduces logits, uses the stored maps, and descends the target."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from attngrad import AttngradError
from attngrad.demo import asset_image
from attngrad.experiments.transfer import attention_transfer, positive_share


def manual_forward_with_maps(model, pixel_values, maps):
    """A ViT forward pass written from the architecture, with attention probabilities given per layer."""
    vit = model.vit
    h = vit.embeddings(pixel_values)
    heads = model.config.num_attention_heads
    for layer, attn in zip(vit.layers, maps):
        x = layer.layernorm_before(h)
        b, n, d = x.shape
        v = layer.attention.v_proj(x).view(b, n, heads, d // heads).transpose(1, 2)  # (B, H, N, dh)
        mixed = torch.zeros_like(v)
        for head in range(heads):
            for i in range(n):
                mixed[:, head, i] = (attn[:, head, i, :, None] * v[:, head]).sum(dim=1)
        h = h + layer.attention.o_proj(mixed.transpose(1, 2).reshape(b, n, d))
        h = h + layer.mlp.fc2(layer.mlp.activation_fn(layer.mlp.fc1(layer.layernorm_after(h))))
    return model.classifier(vit.layernorm(h)[:, 0])


def test_override_reproduces_logits_exactly_and_uses_the_stored_maps(tiny_explainer, tiny_pixels):
    adapter = tiny_explainer.adapter
    x = tiny_pixels[:2]
    with torch.no_grad():
        out = adapter.forward(x)
        maps = [torch.nn.Parameter(a.clone()) for a in out.attentions]
        with adapter.override_attention(maps):
            again = adapter.forward(x)
        assert torch.equal(again.logits, out.logits)  # exactly, before any update
        torch.testing.assert_close(manual_forward_with_maps(adapter.model, x, out.attentions), out.logits)
        # other maps: the model follows them (checked against the hand-written forward pass)
        uniform = [torch.full_like(a, 1.0 / a.shape[-1]) for a in out.attentions]
        with adapter.override_attention(uniform):
            forced = adapter.forward(x)
        assert not torch.allclose(forced.logits, out.logits)
        torch.testing.assert_close(forced.logits, manual_forward_with_maps(adapter.model, x, uniform))
    # the context removed itself
    assert torch.equal(adapter.forward(x).logits.detach(), out.logits)


def test_positive_share_by_hand():
    maps = torch.tensor([[[2.0, -1.0], [1.0, 1.0]]])
    region = torch.tensor([[True, True], [False, False]])
    # positive mass 2 + 1 + 1 = 4, of which 2 lies in the region
    assert positive_share(maps, region).tolist() == [0.5]
    assert positive_share(-maps.abs(), region).tolist() == [0.0]


def test_transfer_lowers_the_target_logit_with_weights_frozen(tiny_explainer, tiny_pixels):
    x = tiny_pixels[:1]
    before = {k: v.clone() for k, v in tiny_explainer.adapter.model.state_dict().items()}
    flags = [p.requires_grad for p in tiny_explainer.adapter.model.parameters()]
    res = attention_transfer(tiny_explainer, x, target="top1", opposing="top2", steps=4, lr=0.05, optimizer="sgd")
    assert res.reproduction_error == 0.0
    assert [s.step for s in res.steps] == [0, 1, 2, 3, 4]
    logits = [s.target_logit for s in res.steps]
    assert logits[-1] < logits[0] - 1e-3
    assert all(0.0 <= s.opposing_share <= 1.0 for s in res.steps)
    # weights untouched, flags restored
    after = tiny_explainer.adapter.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in tiny_explainer.adapter.model.parameters()] == flags
    # step 0 is the ordinary complete explanation of the target, and of the opposing class
    target, opposing = tiny_explainer.labels.index(res.target), tiny_explainer.labels.index(res.opposing)
    plain = tiny_explainer.explain(x, target=[target], method="complete")
    torch.testing.assert_close(res.steps[0].map, plain.maps[0])
    torch.testing.assert_close(res.opposing_map, tiny_explainer.explain(x, target=[opposing]).maps[0])
    assert res.steps[0].target_logit == pytest.approx(float(plain.logits[0, target]), abs=1e-5)
    # the share is measured against the opposing class's positive region
    region = res.opposing_map > 0
    expected = float(res.steps[2].map.clamp(min=0)[region].sum() / res.steps[2].map.clamp(min=0).sum())
    assert res.steps[2].opposing_share == pytest.approx(expected, rel=1e-5)


def test_transfer_adam_and_outputs(tiny_explainer, tiny_pixels, tmp_path):
    res = attention_transfer(tiny_explainer, tiny_pixels[:1], steps=3, lr=0.01, optimizer="adam")
    assert res.steps[-1].target_logit < res.steps[0].target_logit
    paths = res.save(tmp_path, "t")
    with paths["csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[3]["target_logit"]) == pytest.approx(res.steps[3].target_logit)
    with Image.open(paths["gif"]) as gif:
        assert gif.n_frames == 4
    assert Image.open(paths["grid"]).size[0] > 0 and paths["curve"].stat().st_size > 0


def test_transfer_bad_inputs(tiny_explainer, tiny_pixels):
    x = tiny_pixels[:1]
    with pytest.raises(AttngradError, match="optimizer"):
        attention_transfer(tiny_explainer, x, optimizer="lbfgs")
    with pytest.raises(AttngradError, match="learning rate"):
        attention_transfer(tiny_explainer, x, lr=0)
    with pytest.raises(AttngradError, match="opposing class equals"):
        attention_transfer(tiny_explainer, x, target="zebra", opposing="zebra")
    with pytest.raises(AttngradError, match="one image"):
        attention_transfer(tiny_explainer, tiny_pixels)


@pytest.mark.slow
def test_transfer_moves_zebra_attention_onto_the_elephant(vit_ti):
    """The shipped ViT-Ti, el1, defaults (Adam, lr 4e-4, 12 steps): measured share 0.24 -> 0.60."""
    res = attention_transfer(vit_ti, asset_image("el1.jpg"), "zebra", "African elephant", steps=12)
    first, last = res.steps[0], res.steps[-1]
    assert res.reproduction_error == 0.0
    assert last.target_logit < first.target_logit - 10
    assert last.target_logit < last.opposing_logit
    assert last.opposing_share > first.opposing_share + 0.2
    assert np.isfinite([s.opposing_share for s in res.steps]).all()


def test_on_step_reports_every_step_and_can_stop_the_run(tiny_explainer, tiny_pixels):
    seen = []
    res = attention_transfer(tiny_explainer, tiny_pixels[:1], 1, 2, steps=3, on_step=lambda s, n: seen.append((s, n)))
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert [n["target_logit"] for _, n in seen] == [s.target_logit for s in res.steps]
    weights = list(tiny_explainer.adapter.model.parameters())
    flags = [w.requires_grad for w in weights]

    class Stop(Exception):
        pass

    def stop_at_one(step, numbers):
        if step == 1:
            raise Stop

    with pytest.raises(Stop):
        attention_transfer(tiny_explainer, tiny_pixels[:1], 1, 2, steps=5, on_step=stop_at_one)
    assert [w.requires_grad for w in weights] == flags  # weights unfrozen again after the stop
