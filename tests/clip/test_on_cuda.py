"""CLIP on a device gives the CPU's maps: every method of :data:`attngrad.clip.CLIP_METHODS` on both
towers of a tiny float64 CLIP, two images against three texts of different lengths (padded), with the
cosine loss and a two-class loss against a contrast text; and a LiT-shaped pair (ViT class token + mean-pooled BERT).

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest
import torch

from attngrad import AttngradError
from attngrad.clip import ClipExplainer, from_hf_clip
from attngrad.clip.explainer import CLIP_METHODS

from .._devices import DEVICE, assert_same, moved, on_device
from .conftest import TEXTS

pytestmark = on_device


@pytest.fixture(scope="module")
def pair(tiny_clip, tokenizer):
    cpu = ClipExplainer(from_hf_clip(tiny_clip, tokenizer))
    there = ClipExplainer(from_hf_clip(moved(tiny_clip), tokenizer), device=DEVICE)
    assert there.device.type == DEVICE.split(":")[0] and cpu.device.type == "cpu"
    return cpu, there


@pytest.mark.parametrize("tower", ["image", "text"])
def test_every_method(pair, pixels, tower):
    cpu, there = pair
    methods = [m for m in CLIP_METHODS if not (tower == "text" and m == "attn_gradcam")]
    losses = [("logit", None)] + ([("normdiff", 0)] if tower == "image" else [])
    for loss, contrast in losses:
        a = cpu.explain_methods(pixels, TEXTS, methods, tower=tower, loss=loss, contrast=contrast)
        b = there.explain_methods(pixels, TEXTS, methods, tower=tower, loss=loss, contrast=contrast)
        for m in methods:
            assert_same(a[m].maps, b[m].maps, (tower, loss, m))
            assert_same(a[m].similarity, b[m].similarity, (tower, loss, m, "similarity"))


def _lit_like(tokenizer, device=None):
    """The LiT-shaped pair of tests/clip/test_pooled_towers.py (ViT class token + mean-pooled BERT), float64."""
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    from attngrad.clip import ClipModel as Pair
    from attngrad.clip import ImageTower, TextTower
    from attngrad.models import Preprocessor

    torch.manual_seed(3)
    vit = ViTModel(ViTConfig(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                             image_size=32, patch_size=8), add_pooling_layer=False).double().eval()
    bert = BertModel(BertConfig(vocab_size=len(tokenizer.vocab), hidden_size=16, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=32, max_position_embeddings=24,
                                initializer_range=0.3), add_pooling_layer=False).double().eval()
    img_proj = torch.nn.Linear(24, 8, bias=False).double()
    txt_proj = torch.nn.Linear(16, 8, bias=False).double()
    image = ImageTower(vit, img_proj, lambda out: out.last_hidden_state[:, 0], Preprocessor(resize=(32, 32)), (8, 8))
    text = TextTower(bert, txt_proj, tokenizer, read="pooled")
    return ClipExplainer(Pair(image, text, 10.0, "tiny LiT"), device=device)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_pooled_towers(tokenizer, pixels, tower):
    cpu, there = _lit_like(tokenizer), _lit_like(tokenizer, DEVICE)
    assert there.device.type == DEVICE.split(":")[0] and cpu.device.type == "cpu"
    methods = []
    for m in CLIP_METHODS:  # the methods this tower takes (a pooled text tower refuses one-row reads)
        try:
            cpu.explain_methods(pixels[:1], TEXTS[:1], [m], tower=tower)
        except AttngradError:
            continue
        methods.append(m)
    assert "complete" in methods
    a = cpu.explain_methods(pixels, TEXTS, methods, tower=tower)
    b = there.explain_methods(pixels, TEXTS, methods, tower=tower)
    for m in methods:
        assert_same(a[m].maps, b[m].maps, ("lit", tower, m))
        assert_same(a[m].similarity, b[m].similarity, ("lit", tower, m, "similarity"))
