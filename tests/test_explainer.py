"""The Explainer API on the tiny model and, for the paper's claims, on the real ViT-Ti."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attngrad import AttngradError
from attngrad.demo import asset_image


def test_inputs_tensor_pil_path(tiny_explainer, tmp_path):
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8))
    pil.save(tmp_path / "a.png")
    from_pil = tiny_explainer.explain([pil, pil], method="complete")
    from_path = tiny_explainer.explain(tmp_path / "a.png", method="complete")
    pixels, shown = tiny_explainer.prepare(pil)
    from_tensor = tiny_explainer.explain(pixels[0], method="complete")
    assert from_pil.maps.shape == (2, 4, 4) and from_pil.targets.dtype == torch.long
    torch.testing.assert_close(from_path.maps[0], from_pil.maps[1])
    torch.testing.assert_close(from_tensor.maps[0], from_path.maps[0])
    assert shown[0].size == (32, 32) and from_tensor.images[0].size == (32, 32)
    assert from_pil.logits.shape == (2, 5)


def test_explanation_fields(tiny_explainer, tiny_pixels):
    res = tiny_explainer.explain(tiny_pixels, target="zebra", contrast="cat", loss="normdiff")
    assert res.target_names == ["zebra"] * 3 and res.contrast_names == ["cat"] * 3
    norm = res.normalized()
    assert torch.allclose(norm.abs().flatten(1).amax(1), torch.ones(3))
    assert res.method == "complete" and res.loss == "normdiff"


def test_explain_methods_shares_one_pass(tiny_explainer, tiny_pixels, monkeypatch):
    calls = []
    original = tiny_explainer.adapter.forward
    monkeypatch.setattr(tiny_explainer.adapter, "forward", lambda x: calls.append(1) or original(x))
    out = tiny_explainer.explain_methods(tiny_pixels, ["complete", "gae", "absolute", "rollout", "attn_gradcam"])
    assert len(calls) == 1 and set(out) == {"complete", "gae", "absolute", "rollout", "attn_gradcam"}


def test_unknown_method(tiny_explainer, tiny_pixels):
    with pytest.raises(AttngradError, match="unknown method 'compleet'; choose from complete"):
        tiny_explainer.explain(tiny_pixels, method="compleet")


@pytest.mark.slow
def test_paper_figure5_claim_on_vit_ti(vit_ti):
    """complete: zebra and elephant maps anti-correlated (r < -0.5); gae: not (r > 0)."""
    path = asset_image("el1.jpg")
    res = vit_ti.explain_methods([path, path], ["complete", "gae"], target=["zebra", "African elephant"])
    assert vit_ti.predict(path)[0][0].label == "zebra"
    r_complete = np.corrcoef(res["complete"].numpy().reshape(2, -1))[0, 1]
    r_gae = np.corrcoef(res["gae"].numpy().reshape(2, -1))[0, 1]
    assert r_complete < -0.5, r_complete
    assert r_gae > 0, r_gae
    # the zebra stands in the left third of el1: complete puts positive mass there for zebra
    zebra = res["complete"].maps[0]
    assert zebra[:, :5].clamp(min=0).sum() > zebra[:, 5:].clamp(min=0).sum()


@pytest.mark.parametrize("loss", ["normdiff", "diff", "ratio"])
def test_contrast_equal_to_target_is_refused(tiny_explainer, tiny_pixels, loss):
    with pytest.raises(AttngradError, match=r"the contrast equals the target \('zebra'\) for item 1"):
        tiny_explainer.explain(tiny_pixels, target="zebra", contrast="zebra", loss=loss)
    top1 = int(tiny_explainer.predict(tiny_pixels[1:2], k=1)[0][0].index)
    with pytest.raises(AttngradError, match="for item 2"):  # one clash in a batch is enough
        tiny_explainer.trace(tiny_pixels, target=["cat", top1, "cat"], contrast=["dog", "top1", "dog"], loss=loss)
    tiny_explainer.explain(tiny_pixels, target="top1", contrast="top2", loss=loss)  # different classes: fine


def test_trace_accepts_images_like_every_entry_point(tiny_explainer, tmp_path):
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
    pil.save(tmp_path / "a.png")
    pixels, _ = tiny_explainer.prepare(pil)
    from_tensor = tiny_explainer.trace(pixels, target=2)
    for given in (pil, [pil], tmp_path / "a.png", str(tmp_path / "a.png")):
        trace = tiny_explainer.trace(given, target=2)
        torch.testing.assert_close(trace.gradients[0], from_tensor.gradients[0])
        assert trace.grid == (4, 4)


def test_display_images_are_built_on_first_access_only(tiny_explainer, tiny_pixels):
    out = tiny_explainer.explain_methods(tiny_pixels, ["complete", "gae"])
    images = out["complete"].images
    assert images is out["gae"].images and not images.built  # one lazy list shared by the batch's results
    first = images[0]
    assert images.built and len(images) == 3 and first.size == (32, 32) and images[1:] == list(images)[1:]


def test_display_images_show_the_tensor_as_given(tiny_explainer, tiny_pixels):
    x = tiny_pixels.clone()
    res = tiny_explainer.explain(x)
    x.zero_()  # the caller reuses its tensor before looking at the pictures
    pre = tiny_explainer.adapter.preprocessor
    want = ((pre.denormalize(tiny_pixels) / pre.rescale / 255).clamp(0, 1) * 255).round().byte()
    assert np.array_equal(np.asarray(res.images[0]), want[0].permute(1, 2, 0).numpy())


def test_options_are_keyword_only(tiny_explainer, tiny_pixels):
    with pytest.raises(TypeError):
        tiny_explainer.explain(tiny_pixels, "zebra")
    with pytest.raises(TypeError):
        tiny_explainer.trace(tiny_pixels, 1)
    with pytest.raises(TypeError):
        tiny_explainer.predict(tiny_pixels, 3)


def test_start_layer_goes_to_the_methods_that_take_it(tiny_explainer, tiny_pixels):
    out = tiny_explainer.explain_methods(tiny_pixels, ["complete", "raw_attention"], start_layer=1)
    alone = tiny_explainer.explain(tiny_pixels, method="complete", start_layer=1)
    torch.testing.assert_close(out["complete"].maps, alone.maps)
    with pytest.raises(AttngradError, match="none of raw_attention takes it"):
        tiny_explainer.explain(tiny_pixels, method="raw_attention", start_layer=1)
    with pytest.raises(AttngradError, match="no methods given"):
        tiny_explainer.explain_methods(tiny_pixels, [])


@pytest.mark.parametrize("start_layer", [1.5, float("nan"), True, "1"])
def test_start_layer_must_be_a_whole_number(tiny_explainer, tiny_pixels, start_layer):
    """1.5 and nan used to end in a TypeError from a slice; True ran as layer 1."""
    with pytest.raises(AttngradError, match="start_layer must be a whole number"):
        tiny_explainer.explain(tiny_pixels, method="gae", start_layer=start_layer)
