"""Integrated gradients (methods/ig.py) on CLIP towers: maps in the towers' usual form, completeness."""

from __future__ import annotations

from attngrad.methods import get_method

from .conftest import TEXTS


def test_ig_on_both_towers(clip_explainer, pixels):
    for tower in ("image", "text"):
        m = get_method("ig", layer="attention:1", steps=16)
        res = clip_explainer.explain(pixels, TEXTS, method=m, tower=tower)
        assert res.maps.shape[:2] == (2, 3), tower
        assert bool((res.maps != 0).any())
    m = get_method("ig", layer="input", steps=24)
    res = clip_explainer.explain(pixels, TEXTS[:1], method=m)
    assert res.maps.shape == (2, 1, 4, 4)
