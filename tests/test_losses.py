"""Losses (eqs. 7-8 and friends) and their gradients' effect on the maps."""

from __future__ import annotations

import pytest
import torch

from attngrad import AttngradError, get_loss

LOGITS = torch.tensor([[2.0, 4.0, -1.0], [3.0, 1.0, 5.0]])
T = torch.tensor([1, 2])
C = torch.tensor([0, 0])


def test_values():
    torch.testing.assert_close(get_loss("logit")(LOGITS, T, None), torch.tensor([4.0, 5.0]))
    torch.testing.assert_close(get_loss("diff")(LOGITS, T, C), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(get_loss("normdiff")(LOGITS, T, C), torch.tensor([0.5, 0.4]))
    torch.testing.assert_close(get_loss("ratio")(LOGITS, T, C), torch.tensor([2.0, 5.0 / 3.0]))


def test_callables_of_one_two_three_arguments():
    assert torch.equal(get_loss(lambda z: z[:, 0])(LOGITS, T, C), torch.tensor([2.0, 3.0]))
    assert torch.equal(get_loss(lambda z, t: z.gather(1, t[:, None])[:, 0])(LOGITS, T, C), torch.tensor([4.0, 5.0]))
    assert torch.equal(get_loss(lambda z, t, c: z[:, 0] - c)(LOGITS, T, C), torch.tensor([2.0, 3.0]))
    with pytest.raises(AttngradError, match="shape"):
        get_loss(lambda z: z.sum())(LOGITS, T, C)


def test_unknown_loss():
    with pytest.raises(AttngradError, match="unknown loss 'logits'; choose one of logit, normdiff"):
        get_loss("logits")


def test_diff_maps_of_swapped_classes_are_near_negatives(tiny_explainer, tiny_pixels):
    """The gradients are exact negatives; the rollout's second-order terms keep their sign, so
    the maps are negatives up to those terms."""
    a = tiny_explainer.explain(tiny_pixels, target=1, contrast=2, loss="diff", method="complete")
    b = tiny_explainer.explain(tiny_pixels, target=2, contrast=1, loss="diff", method="complete")
    pair = torch.stack([a.maps.flatten(), b.maps.flatten()])
    assert torch.corrcoef(pair)[0, 1] < -0.95
    grads = [tiny_explainer.trace(tiny_pixels, target=t, loss="diff", contrast=c).gradients[0] for t, c in ((1, 2), (2, 1))]
    torch.testing.assert_close(grads[0], -grads[1])


def test_two_class_loss_needs_contrast(tiny_explainer, tiny_pixels):
    with pytest.raises(AttngradError, match="contrast"):
        tiny_explainer.explain(tiny_pixels, loss="normdiff")


def test_nan_gradients_are_reported(tiny_explainer, tiny_pixels):
    with pytest.raises(AttngradError, match="NaN or infinite"):
        tiny_explainer.explain(tiny_pixels, loss=lambda z: z[:, 0] * float("nan"))


def test_custom_loss_equals_builtin(tiny_explainer, tiny_pixels):
    own = tiny_explainer.explain(tiny_pixels, loss=lambda z: z[:, 3] - z[:, 1]).maps
    builtin = tiny_explainer.explain(tiny_pixels, target=3, contrast=1, loss="diff").maps
    torch.testing.assert_close(own, builtin)


def test_contrast_with_a_one_class_loss_is_refused(tiny_explainer, tiny_pixels):
    """logit never reads the contrast: a contrast given with it would silently give the one-class map."""
    with pytest.raises(AttngradError, match="a contrast class needs a two-class loss"):
        tiny_explainer.explain(tiny_pixels, target="zebra", contrast="cat")
    with pytest.raises(AttngradError, match="two-class loss"):
        tiny_explainer.explain(tiny_pixels, contrast="cat", loss=lambda z, t: z[:, 0])


def test_three_argument_callable_reads_the_contrast(tiny_explainer, tiny_pixels):
    def difference(z, t, c):
        return z.gather(1, t[:, None])[:, 0] - z.gather(1, c[:, None])[:, 0]

    own = tiny_explainer.explain(tiny_pixels, target="zebra", contrast="cat", loss=difference).maps
    builtin = tiny_explainer.explain(tiny_pixels, target="zebra", contrast="cat", loss="diff").maps
    torch.testing.assert_close(own, builtin)


def test_a_contrast_no_method_reads_is_refused():
    """rollout, raw_attention and random read neither the loss nor a contrast: alone, a contrast or a two-class loss
    would label maps that are the same without them; with a gradient method among them, the run is meaningful."""
    from attngrad.losses import check_loss_is_read

    for loss, contrast in (("diff", "cat"), ("normdiff", None), ("logit", "cat")):
        with pytest.raises(AttngradError, match="neither the loss nor a contrast"):
            check_loss_is_read(["rollout", "random"], loss, contrast)
    check_loss_is_read(["rollout", "complete"], "diff", "cat")
    check_loss_is_read(["raw_attention"], "logit", None)
    check_loss_is_read(["rollout"], None, None)
