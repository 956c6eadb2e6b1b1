"""Model families on tiny random configs: the grid and special tokens come from the config, and the
``complete`` map equals an independent computation (maps and gradients taken from the model's own
output, then R <- R + E_H(grad A ⊙ A) R by explicit loops over layers and heads, method.md eq. 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attngrad import AttngradError, Explainer
from attngrad.models import HFAdapter

from ..conftest import tiny_vit_config

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=4)


def independent_complete(model, pixels, target, row, prefix):
    """``complete`` for one image from the model's own attentions, by loops over layers and heads."""
    out = model(pixel_values=pixels, output_attentions=True)
    attns = [a[0] for a in out.attentions]
    grads = torch.autograd.grad(out.logits[0, target], out.attentions)
    n = attns[0].shape[-1]
    r = torch.eye(n)
    for layer in range(len(attns)):
        mix = torch.zeros(n, n)
        for h in range(attns[layer].shape[0]):
            mix += grads[layer][0, h] * attns[layer][h] / attns[layer].shape[0]
        r = r + mix @ r
    return r[row, prefix:]


def vit_patch14():
    from transformers import ViTForImageClassification

    return ViTForImageClassification(tiny_vit_config(image_size=42, patch_size=14, num_labels=5))


def vit_384():
    from transformers import ViTForImageClassification

    return ViTForImageClassification(tiny_vit_config(image_size=384, patch_size=32, num_hidden_layers=2))


def deit_distilled():
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher

    return DeiTForImageClassificationWithTeacher(DeiTConfig(image_size=32, patch_size=8, **SMALL))


def dinov2_registers():
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersForImageClassification

    cfg = Dinov2WithRegistersConfig(image_size=28, patch_size=14, num_register_tokens=3, **SMALL)
    return Dinov2WithRegistersForImageClassification(cfg)


# (builder, image size, grid, special tokens)
FAMILIES = {
    "vit-patch14": (vit_patch14, 42, (3, 3), {"cls": 0}),
    "vit-384": (vit_384, 384, (12, 12), {"cls": 0}),
    "deit-distilled": (deit_distilled, 32, (4, 4), {"cls": 0, "distillation": 1}),
    "dinov2-registers": (dinov2_registers, 28, (2, 2),
                         {"cls": 0, "register0": 1, "register1": 2, "register2": 3}),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_grid_tokens_and_map_match_the_independent_computation(family):
    build, size, grid, special = FAMILIES[family]
    torch.manual_seed(0)
    model = build().eval()
    ex = Explainer(model)
    assert ex.adapter.special_tokens == special
    assert ex.adapter.preprocessor.resize == (size, size)  # read from the config, not a default of 224
    torch.manual_seed(1)
    x = torch.randn(2, 3, size, size)
    tokens = ["cls", "distillation"] if "distillation" in special else ["cls"]
    for token in tokens:
        res = ex.explain(x, target=[1, 3], method="complete", token=token)
        assert res.maps.shape == (2, *grid)
        for i, t in enumerate([1, 3]):
            want = independent_complete(model, x[i : i + 1], t, special[token], len(special))
            torch.testing.assert_close(res.maps[i].flatten(), want, rtol=1e-4, atol=1e-6)


def test_pictures_are_resized_to_the_configured_size():
    torch.manual_seed(0)
    ex = Explainer(vit_384().eval())
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    pixels, shown = ex.prepare(picture)
    assert pixels.shape == (1, 3, 384, 384) and shown[0].size == (384, 384)
    assert ex.explain(picture).maps.shape == (1, 12, 12)


@pytest.mark.parametrize("missing", ["patch_size", "image_size"])
def test_missing_patch_or_image_size_is_an_error_not_a_default(missing):
    from transformers import ViTForImageClassification

    model = ViTForImageClassification(tiny_vit_config()).eval()
    object.__setattr__(model.config, missing, None)  # as if the config lacked it (bypasses its validation)
    with pytest.raises(AttngradError, match=f"no {missing}"):
        HFAdapter(model)
    if missing == "image_size":  # a preprocessor given explicitly is enough
        from attngrad.models import Preprocessor

        assert HFAdapter(model, Preprocessor(resize=(32, 32))).preprocessor.resize == (32, 32)
