"""Detail interpretation: t1 against its runners-up, swapped targets, the figure's gallery images."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from attngrad import AttngradError
from attngrad.demo import asset_image
from attngrad.experiments.detail import detail_interpretation


def test_swapped_targets_give_near_negative_maps_for_diff(tiny_explainer, tiny_pixels):
    """grad of (l1 - l2) is minus grad of (l2 - l1): each layer's signed mix flips exactly; the rollout's
    first-order term flips, so the maps are near negatives of each other."""
    x = tiny_pixels[:1]
    a = tiny_explainer.trace(x, target=0, loss="diff", contrast=1)
    b = tiny_explainer.trace(x, target=1, loss="diff", contrast=0)
    for ga, gb in zip(a.gradients, b.gradients):
        torch.testing.assert_close(ga, -gb)
    m12 = detail_interpretation(tiny_explainer, x, target=0, contrasts=[1], loss="diff").maps[0]
    m21 = detail_interpretation(tiny_explainer, x, target=1, contrasts=[0], loss="diff").maps[0]
    correlation = torch.corrcoef(torch.stack([m12.flatten(), m21.flatten()]))[0, 1]
    assert correlation < -0.99
    assert float((m12 + m21).norm() / m12.norm()) < 0.05


def test_detail_compares_t1_with_the_runners_up_in_one_batch(tiny_explainer, tiny_pixels):
    x = tiny_pixels[1:2]
    logits = tiny_explainer.adapter.forward(x).logits[0].detach()
    order = logits.argsort(descending=True).tolist()
    res = detail_interpretation(tiny_explainer, x, k=3)
    labels = tiny_explainer.labels
    assert res.target == labels[order[0]] and res.contrasts == [labels[order[1]], labels[order[2]]]
    assert res.maps.shape == (2, 4, 4)
    for j, c in enumerate(order[1:3]):
        single = tiny_explainer.explain(x, target=order[0], loss="normdiff", contrast=c, method="complete")
        torch.testing.assert_close(res.maps[j], single.maps[0])
    probs = logits.softmax(-1)
    assert res.probabilities[res.target] == pytest.approx(float(probs[order[0]]), rel=1e-5)


def test_detail_named_pair_gallery_and_figure(tiny_explainer, tiny_pixels, tmp_path):
    Image.new("RGB", (20, 20), (0, 0, 255)).save(tmp_path / "n02391049_zebra.jpg")
    res = detail_interpretation(tiny_explainer, tiny_pixels[:1], target="cat", contrasts=["zebra", "dog"], gallery=tmp_path)
    assert res.target == "cat" and res.contrasts == ["zebra", "dog"]
    assert res.typical[0] is None and res.typical[1].size == (20, 20) and res.typical[2] is None
    path = res.save_figure(tmp_path / "detail.png")
    assert Image.open(path).size[0] > 100


def test_detail_bad_inputs(tiny_explainer, tiny_pixels):
    x = tiny_pixels[:1]
    with pytest.raises(AttngradError, match="contrast equals the target"):
        detail_interpretation(tiny_explainer, x, target="cat", contrasts=["cat"])
    with pytest.raises(AttngradError, match="k must be"):
        detail_interpretation(tiny_explainer, x, k=1)
    with pytest.raises(AttngradError, match="compares two classes"):
        detail_interpretation(tiny_explainer, x, loss="logit")


@pytest.mark.slow
def test_snail_against_its_runners_up(vit_ti):
    res = detail_interpretation(vit_ti, asset_image("n01944390_snail.jpg"), k=3)
    assert res.target == "snail" and len(res.contrasts) == 2
    # both signs appear: details for snail (red) and for the runner-up (blue)
    assert (res.maps > 0).any() and (res.maps < 0).any()


@pytest.mark.slow
def test_swapped_diff_maps_on_the_real_model(vit_ti):
    """On ViT-Ti the rollout's higher-order terms matter more: measured correlation -0.89 on el1."""
    image = asset_image("el1.jpg")
    a = detail_interpretation(vit_ti, image, target="zebra", contrasts=["African elephant"], loss="diff").maps[0]
    b = detail_interpretation(vit_ti, image, target="African elephant", contrasts=["zebra"], loss="diff").maps[0]
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] < -0.8
