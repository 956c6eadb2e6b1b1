"""The timm adapter: same maps as the Hugging Face copy of the same weights."""

from __future__ import annotations

import pytest
import torch

from attngrad import AttngradError, Explainer

from ..conftest import TIMM_CKPT, needs_shared

timm = pytest.importorskip("timm")


def test_tiny_timm_vit_maps_and_override():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              num_classes=5).eval()
    ex = Explainer(model)
    x = torch.randn(2, 3, 32, 32)
    out = ex.adapter.forward(x)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 3, 17, 17)
    with torch.no_grad():
        base = ex.adapter.forward(x)
        with ex.adapter.override_attention([a.clone() for a in base.attentions]):
            again = ex.adapter.forward(x)
    assert torch.equal(base.logits, again.logits)
    assert ex.explain(x, method="complete").maps.shape == (2, 4, 4)
    assert not any(m._forward_hooks for m in model.modules())  # hooks cleaned up


def test_unsupported_timm_model():
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    with pytest.raises(AttngradError, match="not a supported timm model"):
        Explainer(model)


@needs_shared
@pytest.mark.slow
def test_timm_and_hf_copies_give_the_same_maps(vit_ti):
    ex = Explainer.from_timm("vit_tiny_patch16_224", checkpoint=TIMM_CKPT)
    from attngrad.demo import asset_image

    pixels, _ = vit_ti.prepare(asset_image("el1.jpg"))  # the same tensor into both models
    hf = vit_ti.explain_methods(pixels, ["complete", "gae", "rollout"], target="zebra")
    tm = ex.explain_methods(pixels, ["complete", "gae", "rollout"], target="zebra")
    torch.testing.assert_close(tm["complete"].logits, hf["complete"].logits, rtol=1e-3, atol=1e-3)
    for m in hf:
        rel = (tm[m].maps - hf[m].maps).norm() / hf[m].maps.norm()
        assert rel < 1e-3, (m, float(rel))
    assert ex.labels[340] == "zebra"
