"""The towers implement the model contract: ModelAdapter members, attention override, frozen weights."""

from __future__ import annotations

import torch

from attngrad.clip import ImageTower, TextTower
from attngrad.models.base import ImageAdapter, ModelAdapter


def test_towers_are_adapters_of_the_contract(clip_explainer, tiny_clip):
    image, text = clip_explainer.model.image, clip_explainer.model.text
    assert isinstance(image, ImageTower) and isinstance(image, ImageAdapter)
    assert isinstance(text, TextTower) and isinstance(text, ModelAdapter) and not isinstance(text, ImageAdapter)
    assert image.num_layers == tiny_clip.config.vision_config.num_hidden_layers
    assert text.num_layers == tiny_clip.config.text_config.num_hidden_layers
    assert image.special_tokens == {"cls": 0}
    assert text.special_tokens == {"cls": 0}  # the tests' tokenizer is a BERT one: [CLS] leads every text
    assert image.labels == [] and text.labels == []


def test_override_with_own_maps_reproduces_the_embeddings(clip_explainer, pixels):
    image, text = clip_explainer.model.image, clip_explainer.model.text
    with torch.no_grad():
        out = image.forward(pixels)
        with image.override_attention([a.clone() for a in out.attentions]):
            same = image.forward(pixels)
        with image.override_attention([torch.full_like(a, 1.0 / a.shape[-1]) for a in out.attentions]):
            flat = image.forward(pixels)
    torch.testing.assert_close(same.logits, out.logits)
    assert not torch.allclose(flat.logits, out.logits)  # the override is used, not ignored
    assert image.forward(pixels).logits.allclose(out.logits)  # and gone afterwards

    batch = text.encode(["a photo of a zebra", "an elephant"])
    embeds = text.embed(batch.input_ids)
    with torch.no_grad():
        out = text.forward(embeds, batch)
        with text.override_attention([a.clone() for a in out.attentions]):
            same = text.forward(embeds, batch)
    torch.testing.assert_close(same.logits, out.logits)


def test_frozen_weights_cover_the_projection_and_are_restored(clip_explainer):
    image = clip_explainer.model.image
    weights = list(image.encoder.parameters()) + list(image.projection.parameters())
    before = [w.requires_grad for w in weights]
    with image.frozen_weights():
        assert not any(w.requires_grad for w in weights)
    assert [w.requires_grad for w in weights] == before
