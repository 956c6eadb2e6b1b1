"""CLIP on a device gives the CPU's maps: every method of :data:`attngrad.clip.CLIP_METHODS` on both
towers of a tiny float64 CLIP, two images against three texts of different lengths (padded), with the
cosine loss and a two-class loss against a contrast text; and a LiT-shaped pair (ViT class token + mean-pooled BERT).

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest

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
    from .conftest import lit_like

    return lit_like(tokenizer, device)[0]


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
