"""VLMs on a device give the CPU's maps: every method of :data:`attngrad.vlm.VLM_METHODS` and both
readings (language model's map, and the vision rollout) on tiny random LLaVA (ViT, CLIP layer -2,
full features), Idefics3 and Qwen2-VL; three images with prompts of different lengths (left padding)
over two batches, the top token, a ``diff`` loss (token 5 against 6) and each image's token against
the mean of the others' (``against_the_others``); one generation; and a saved LLaVA
folder loaded with ``device=`` and fed shipped images through its preprocessor.

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest
import torch

from attngrad.vlm import READINGS, VLM_METHODS, VLMAdapter, VLMExplainer, against_the_others

from .._devices import DEVICE, assert_same, moved, on_device
from .conftest import TEMPLATE, tiny_idefics3, tiny_llava, tiny_qwen2vl

pytestmark = on_device

PROMPTS = ["animal", "what is in this photo", "what animal is in this photo the zebra or the horse"]
KINDS = {"vit": lambda: tiny_llava("vit"), "clip-layer-2": lambda: tiny_llava("clip", layer=-2),
         "vit-full": lambda: tiny_llava("vit", strategy="full"), "idefics3": tiny_idefics3, "qwen2vl": tiny_qwen2vl}


@pytest.fixture(scope="module", params=list(KINDS))
def pair(request, tokenizer):
    model = KINDS[request.param]()
    cpu = VLMExplainer(VLMAdapter(model, tokenizer, template=TEMPLATE), batch_size=2)
    there = VLMExplainer(VLMAdapter(moved(model), tokenizer, template=TEMPLATE), batch_size=2)
    assert there.adapter.device.type == DEVICE.split(":")[0] and cpu.adapter.device.type == "cpu"
    return request.param, cpu, there


def test_every_method_and_reading(pair):
    kind, cpu, there = pair
    pixels = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    names = [5, 6, 7]  # one per image, each against the mean of the other two (vlm.against_the_others)
    for spec in (dict(target=None), dict(target=5, loss="diff", contrast=6),
                 dict(target=names, loss=against_the_others(names))):
        a = cpu.explain_methods(pixels, PROMPTS, VLM_METHODS, readings=READINGS, **spec)
        b = there.explain_methods(pixels, PROMPTS, VLM_METHODS, readings=READINGS, **spec)
        for key in a:
            what = (kind, *key, str(spec))
            assert b[key].targets.tolist() == a[key].targets.tolist(), what
            assert_same(a[key].maps, b[key].maps, what)
            assert_same(a[key].text_scores, b[key].text_scores, (*what, "text"))
            assert_same(a[key].logits, b[key].logits, (*what, "logits"))


def test_generation(pair):
    kind, cpu, there = pair
    image = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a = cpu.explain_generation(image, "animal", max_new_tokens=3)
    b = there.explain_generation(image, "animal", max_new_tokens=3)
    assert b.tokens == a.tokens, kind
    assert_same(a.maps, b.maps, (kind, "generation"))


def test_folder_loaded_with_device(tmp_path):
    """A saved tiny LLaVA loaded with ``device=`` and explained from images through its preprocessor."""
    from attngrad.io import load_image

    from .conftest import save_tiny_llava

    folder = save_tiny_llava(tmp_path / "llava")
    cpu = VLMExplainer.from_pretrained(folder, device="cpu", quiet=True)
    there = VLMExplainer.from_pretrained(folder, device=DEVICE, quiet=True)
    assert there.adapter.device.type == DEVICE.split(":")[0]
    images = [load_image("el1"), load_image("catdog")]
    a = cpu.explain_methods(images, ["animal", "what is in this photo"], ["complete", "gae"], readings=READINGS)
    b = there.explain_methods(images, ["animal", "what is in this photo"], ["complete", "gae"], readings=READINGS)
    for key in a:
        assert_same(a[key].maps, b[key].maps, ("folder", *key))
