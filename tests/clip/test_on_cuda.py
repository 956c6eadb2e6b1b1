"""CLIP on a device gives the CPU's maps: every method of :data:`attngrad.clip.CLIP_METHODS` on both
towers of a tiny float64 CLIP, two images against three texts of different lengths (padded), with the
cosine loss and a two-class loss against a contrast text.

Skipped unless ``ATTNGRAD_TEST_DEVICE`` (default ``cuda``) is present; see :mod:`tests._devices`.
"""

from __future__ import annotations

import pytest

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
